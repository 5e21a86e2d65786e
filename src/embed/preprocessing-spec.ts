/**
 * BiomedCLIP's image preprocessing (open_clip `image_transform` for ViT-B/16 at 224), in
 * TypeScript: resize the shortest side to `size` with a bicubic kernel, center-crop
 * `size` x `size`, scale to 0..1, normalise per channel. Grey images are repeated to 3 channels
 * and an alpha channel is dropped, as PIL's `convert("RGB")` does.
 *
 * Sharp's cubic kernel is Catmull-Rom-like while PIL's bicubic uses a = -0.5 with antialiasing,
 * so resized pixels can differ from PyTorch's by a few grey levels; pixels that need no resize
 * (every QaTa image is already 224 x 224) are bit-identical.
 */
export interface ImagePreprocessing {
  size: number;
  resize: "shortest-side";
  interpolation: "bicubic";
  crop: "center";
  mean: [number, number, number];
  std: [number, number, number];
}

export const BIOMEDCLIP_IMAGE_PREPROCESSING: ImagePreprocessing = {
  size: 224,
  resize: "shortest-side",
  interpolation: "bicubic",
  crop: "center",
  mean: [0.48145466, 0.4578275, 0.40821073],
  std: [0.26862954, 0.26130258, 0.27577711],
};
