import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import path from "node:path";
import { processAlive } from "./catalog.js";

/**
 * A lock file holding its owner's pid, created with O_EXCL. A lock whose owner no longer runs
 * (kill -9) is taken over. Enough for processes sharing one machine's workdir; locks across
 * machines go through Redis instead.
 */
export function tryLockFile(file: string): boolean {
  mkdirSync(path.dirname(file), { recursive: true });
  for (let tries = 0; tries < 3; tries++) {
    try {
      const fd = openSync(file, "wx");
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      let holder = NaN;
      try {
        holder = Number(readFileSync(file, "utf8"));
      } catch {
        continue; // released between our open and read: try again
      }
      if (holder && processAlive(holder)) return false;
      rmSync(file, { force: true });
    }
  }
  return false;
}

export function unlockFile(file: string): void {
  rmSync(file, { force: true });
}
