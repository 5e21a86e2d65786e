import { constants, deflateSync } from "node:zlib";

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(parts: Uint8Array[]): number {
  let c = 0xffffffff;
  for (const part of parts) for (let i = 0; i < part.length; i++) c = CRC_TABLE[(c ^ part[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, "ascii");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32([head.subarray(4), data]), 0);
  return Buffer.concat([head, data, crc]);
}

/** PNG scanlines (a filter byte, then the row) for a width x height 8-bit grey image. */
export function scanlineLength(width: number, height: number): number {
  return (width + 1) * height;
}

/**
 * PNG from scanlines already laid out as `scanlineLength` bytes (filter type 0 on every row).
 * Deflated with Z_RLE, which suits 0/1 masks (runs of equal bytes): fast and small.
 */
export function encodeGreyPngScanlines(scanlines: Uint8Array, width: number, height: number): Uint8Array {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 0; // grey
  const idat = deflateSync(scanlines.subarray(0, scanlineLength(width, height)), { level: 6, strategy: constants.Z_RLE });
  return new Uint8Array(
    Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      chunk("IHDR", header),
      chunk("IDAT", idat),
      chunk("IEND", new Uint8Array(0)),
    ]),
  );
}

/** Image format from the first bytes, as sharp names it. */
export function sniffFormat(bytes: Uint8Array): string | undefined {
  if (bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) return "png";
  if (bytes[0] === 0xff && bytes[1] === 0xd8) return "jpeg";
  if ((bytes[0] === 0x49 && bytes[1] === 0x49 && bytes[2] === 0x2a) || (bytes[0] === 0x4d && bytes[1] === 0x4d && bytes[3] === 0x2a)) return "tiff";
  if (bytes[0] === 0x52 && bytes[1] === 0x49 && bytes[8] === 0x57 && bytes[9] === 0x45 && bytes[10] === 0x42 && bytes[11] === 0x50) return "webp";
  return undefined;
}

export interface PngHeader {
  width: number;
  height: number;
  bitDepth: number;
  /** 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA. */
  colourType: number;
  /** A tRNS chunk: libvips then loads an alpha band too. */
  hasTransparency: boolean;
}

/** IHDR fields and whether a tRNS chunk precedes the image data; undefined when the bytes are not a well-formed PNG start. */
export function readPngHeader(bytes: Uint8Array): PngHeader | undefined {
  if (bytes.length < 33 || sniffFormat(bytes) !== "png") return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const type = (at: number) => String.fromCharCode(bytes[at]!, bytes[at + 1]!, bytes[at + 2]!, bytes[at + 3]!);
  if (view.getUint32(8) !== 13 || type(12) !== "IHDR") return undefined;
  const header: PngHeader = { width: view.getUint32(16), height: view.getUint32(20), bitDepth: bytes[24]!, colourType: bytes[25]!, hasTransparency: false };
  // Chunks before the first IDAT: length (4), type (4), data, CRC (4).
  for (let at = 33; at + 8 <= bytes.length; ) {
    const chunkType = type(at + 4);
    if (chunkType === "IDAT" || chunkType === "IEND") return header;
    if (chunkType === "tRNS") header.hasTransparency = true;
    at += 12 + view.getUint32(at);
  }
  return undefined;
}
