import { lstatSync, readlinkSync, statSync, type Stats } from "node:fs";

/** What a directory entry is when it is neither a regular file nor a folder, in words. */
export function describeSpecial(info: Pick<Stats, "isDirectory" | "isFIFO" | "isSocket" | "isCharacterDevice" | "isBlockDevice">): string {
  if (info.isDirectory()) return "a folder";
  if (info.isFIFO()) return "a FIFO (named pipe)";
  if (info.isSocket()) return "a socket";
  if (info.isCharacterDevice() || info.isBlockDevice()) return "a device";
  return "not a regular file";
}

/**
 * Why `file` cannot be read as a file's bytes, or undefined for a regular file (links
 * followed): a link to nothing, a folder, a FIFO (reading one would block ingest forever),
 * a socket or a device. Checked before any read or digest.
 */
export function notARegularFile(file: string): string | undefined {
  let info: Stats;
  try {
    info = statSync(file);
  } catch (error) {
    const link = (() => {
      try {
        return lstatSync(file).isSymbolicLink() ? readlinkSync(file) : undefined;
      } catch {
        return undefined;
      }
    })();
    return link !== undefined
      ? `a symbolic link to ${link}, which does not exist`
      : `unreadable (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`;
  }
  return info.isFile() ? undefined : describeSpecial(info);
}
