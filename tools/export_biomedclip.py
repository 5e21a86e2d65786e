#!/usr/bin/env python3
"""One-time export of BiomedCLIP to the ONNX folder prolearn's `biomedclip` encoder loads.

Needs Python 3.9+, internet (once) and:  pip install open_clip_torch==2.23.0 transformers torch onnx
Usage:  python tools/export_biomedclip.py --out models/biomedclip

Writes (names fixed by src/embed/biomedclip.ts, BIOMEDCLIP_EXPORT):
  image.onnx        pixel_values float32 [batch,3,224,224] -> image_embeds float32 [batch,512]
  text.onnx         input_ids int64 [batch,256]            -> text_embeds float32 [batch,512]
  text_hidden.onnx  input_ids int64 [batch,256]            -> last_hidden_state float32 [batch,256,768]
  tokenizer.json    the Hugging Face fast tokenizer of BiomedBERT (uncased, [PAD] = 0)
  manifest.json     the contract above, opset 17
The embeddings are the towers' raw projections; prolearn L2-normalises them. The text towers
build their attention mask from input_ids != 0 inside the graph, as open_clip does.
The model card (microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224) restricts the model
to research: no deployed use, clinical or otherwise.
"""
import argparse
import json
import os

FORMAT = "prolearn-biomedclip-onnx/1"
SOURCE = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
OPSET = 17
FILES = {"image": "image.onnx", "text": "text.onnx", "textHidden": "text_hidden.onnx", "tokenizer": "tokenizer.json", "manifest": "manifest.json"}
TENSORS = {"pixelValues": "pixel_values", "imageEmbeds": "image_embeds", "inputIds": "input_ids", "textEmbeds": "text_embeds", "lastHiddenState": "last_hidden_state"}
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
CONTEXT = 256


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--no-hidden", action="store_true", help="skip text_hidden.onnx (only the guide model needs it)")
    args = parser.parse_args()

    import torch
    import open_clip

    os.makedirs(args.out, exist_ok=True)
    model, _, preprocess = open_clip.create_model_and_transforms(SOURCE)
    tokenizer = open_clip.get_tokenizer(SOURCE)
    model.eval()

    class ImageTower(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return self.m.encode_image(pixel_values, normalize=False)

    class TextTower(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return self.m.encode_text(input_ids, normalize=False)

    class TextHidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.transformer = m.text.transformer
            self.pad = m.text.config.pad_token_id

        def forward(self, input_ids):
            mask = (input_ids != self.pad).long()
            return self.transformer(input_ids=input_ids, attention_mask=mask).last_hidden_state

    pixels = torch.randn(2, 3, 224, 224)
    ids = tokenizer(["bilateral pulmonary infection", "one small polyp"], context_length=CONTEXT)

    def export(module, example, input_name, output_name, file):
        torch.onnx.export(
            module, (example,), os.path.join(args.out, file), opset_version=OPSET,
            input_names=[input_name], output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}}, do_constant_folding=True,
        )
        print(f"wrote {file}")

    with torch.no_grad():
        export(ImageTower(model), pixels, TENSORS["pixelValues"], TENSORS["imageEmbeds"], FILES["image"])
        export(TextTower(model), ids, TENSORS["inputIds"], TENSORS["textEmbeds"], FILES["text"])
        if not args.no_hidden:
            export(TextHidden(model), ids, TENSORS["inputIds"], TENSORS["lastHiddenState"], FILES["textHidden"])

    hf_tokenizer = tokenizer.tokenizer  # transformers PreTrainedTokenizerFast
    hf_tokenizer.backend_tokenizer.save(os.path.join(args.out, FILES["tokenizer"]))
    with open(os.path.join(args.out, FILES["tokenizer"])) as f:
        vocab_size = len(json.load(f)["model"]["vocab"])  # what prolearn checks the tokenizer against
    assert hf_tokenizer.pad_token_id == 0, "BiomedCLIP masks padding as input_ids != 0"

    manifest = {
        "format": FORMAT, "source": SOURCE, "opset": OPSET, "embedDim": 512,
        "image": {"file": FILES["image"], "input": TENSORS["pixelValues"], "output": TENSORS["imageEmbeds"], "size": 224, "mean": MEAN, "std": STD},
        "text": {"file": FILES["text"], "input": TENSORS["inputIds"], "output": TENSORS["textEmbeds"], "contextLength": CONTEXT, "vocabSize": vocab_size},
        "textHidden": None if args.no_hidden else {"file": FILES["textHidden"], "input": TENSORS["inputIds"], "output": TENSORS["lastHiddenState"], "hiddenSize": 768},
        "tokenizer": {"file": FILES["tokenizer"], "lowercase": True},
    }
    with open(os.path.join(args.out, FILES["manifest"]), "w") as f:
        json.dump(manifest, f, indent=2)

    # Reference values so users can check prolearn's TypeScript preprocessing against PyTorch's.
    with torch.no_grad():
        ref = model.encode_text(ids, normalize=True)[:, :4].tolist()
    print("manifest written; reference text_embeds[:, :4] (normalised):", ref)


if __name__ == "__main__":
    main()
