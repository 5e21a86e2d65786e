import sharp from "sharp";

export interface Overlay {
  /** PNG/JPEG bytes of a mask: foreground where the value is above `threshold`. */
  mask: Uint8Array;
  color: [number, number, number];
  /** Pixel values above this are foreground; `auto` = 0 for 0/1 masks, 127 for 0..255 ones. */
  threshold?: number | "auto";
}

export const TRUTH_COLOR: [number, number, number] = [255, 122, 0];
export const PREDICTION_COLOR: [number, number, number] = [0, 170, 255];

/**
 * A small PNG thumbnail as a data: URI, with each mask drawn as a translucent fill and an opaque
 * outline so thin structures stay visible at 96 px. The image keeps its aspect ratio inside a
 * size x size box; masks are resized with nearest-neighbour so their edges stay crisp.
 */
export async function thumbnailDataUri(
  image: Uint8Array,
  overlays: readonly Overlay[] = [],
  size = 96,
): Promise<{ uri: string; width: number; height: number }> {
  const base = sharp(image, { failOn: "none" }).rotate().resize(size, size, { fit: "inside", kernel: "lanczos3" }).removeAlpha().toColourspace("srgb");
  const { data, info } = await base.raw().toBuffer({ resolveWithObject: true });
  const { width, height, channels } = info;
  const rgb = Buffer.alloc(width * height * 3);
  for (let i = 0, j = 0; i < width * height; i++, j += channels) {
    rgb[i * 3] = data[j]!;
    rgb[i * 3 + 1] = data[channels >= 3 ? j + 1 : j]!;
    rgb[i * 3 + 2] = data[channels >= 3 ? j + 2 : j]!;
  }
  for (const overlay of overlays) {
    const { data: maskPixels } = await sharp(overlay.mask, { failOn: "none" })
      .greyscale()
      .resize(width, height, { fit: "fill", kernel: "nearest" })
      .raw()
      .toBuffer({ resolveWithObject: true });
    let threshold = overlay.threshold ?? "auto";
    if (threshold === "auto") {
      let max = 0;
      for (const v of maskPixels) if (v > max) max = v;
      threshold = max <= 1 ? 0 : 127;
    }
    const inside = new Uint8Array(width * height);
    for (let i = 0; i < inside.length; i++) inside[i] = maskPixels[i]! > threshold ? 1 : 0;
    const [r, g, b] = overlay.color;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const i = y * width + x;
        if (!inside[i]) continue;
        const edge = x === 0 || y === 0 || x === width - 1 || y === height - 1 || !inside[i - 1] || !inside[i + 1] || !inside[i - width] || !inside[i + width];
        const alpha = edge ? 0.95 : 0.35;
        rgb[i * 3] = Math.round(rgb[i * 3]! * (1 - alpha) + r * alpha);
        rgb[i * 3 + 1] = Math.round(rgb[i * 3 + 1]! * (1 - alpha) + g * alpha);
        rgb[i * 3 + 2] = Math.round(rgb[i * 3 + 2]! * (1 - alpha) + b * alpha);
      }
    }
  }
  const png = await sharp(rgb, { raw: { width, height, channels: 3 } })
    .png({ compressionLevel: 9, palette: false })
    .toBuffer();
  return { uri: `data:image/png;base64,${png.toString("base64")}`, width, height };
}
