import { readFile } from "node:fs/promises";
import * as ort from "onnxruntime-node";
import { ModelError } from "../errors.js";
import { sha256 } from "../util/hash.js";

/**
 * Loading ONNX files for the encoders: read the bytes once (digest, opset and session all come
 * from the same buffer), check the opset and the input/output names, dtypes and shapes against
 * what the caller expects, and say which file and which tensor is wrong when they differ.
 */

export interface OnnxHeader {
  irVersion: number;
  /** domain ("" = the default ai.onnx domain) -> opset version */
  opsets: Record<string, number>;
  producer?: string;
}

/** Reads ir_version, producer_name and opset_import from a serialised ModelProto without parsing the graph. */
export function readOnnxHeader(bytes: Uint8Array): OnnxHeader {
  const reader = new ProtoReader(bytes, 0, bytes.length);
  const header: OnnxHeader = { irVersion: 0, opsets: {} };
  while (!reader.done()) {
    const { field, wireType } = reader.key();
    if (field === 1 && wireType === 0) header.irVersion = reader.varint();
    else if (field === 2 && wireType === 2) header.producer = reader.string();
    else if (field === 8 && wireType === 2) {
      const length = reader.varint();
      const sub = new ProtoReader(bytes, reader.pos, reader.pos + length);
      let domain = "";
      let version = 0;
      while (!sub.done()) {
        const k = sub.key();
        if (k.field === 1 && k.wireType === 2) domain = sub.string();
        else if (k.field === 2 && k.wireType === 0) version = sub.varint();
        else sub.skip(k.wireType);
      }
      header.opsets[domain === "ai.onnx" ? "" : domain] = version;
      reader.pos += length;
    } else reader.skip(wireType);
  }
  return header;
}

class ProtoReader {
  pos: number;
  constructor(
    private readonly bytes: Uint8Array,
    start: number,
    private readonly end: number,
  ) {
    this.pos = start;
  }
  done(): boolean {
    return this.pos >= this.end;
  }
  varint(): number {
    let result = 0;
    let shift = 1;
    for (;;) {
      if (this.pos >= this.end) throw new Error("truncated varint");
      const byte = this.bytes[this.pos++]!;
      result += (byte & 0x7f) * shift;
      if (byte < 0x80) return result;
      shift *= 128;
      if (shift > 2 ** 63) throw new Error("varint too long");
    }
  }
  key(): { field: number; wireType: number } {
    const key = this.varint();
    return { field: Math.floor(key / 8), wireType: key & 7 };
  }
  string(): string {
    const length = this.varint();
    const text = new TextDecoder().decode(this.bytes.subarray(this.pos, this.pos + length));
    this.pos += length;
    return text;
  }
  skip(wireType: number): void {
    if (wireType === 0) this.varint();
    else if (wireType === 1) this.pos += 8;
    else if (wireType === 2) this.pos += this.varint();
    else if (wireType === 5) this.pos += 4;
    else throw new Error(`unsupported protobuf wire type ${wireType}`);
    if (this.pos > this.end) throw new Error("truncated field");
  }
}

/** Expected tensor: `"batch"` marks the dynamic batch dimension, numbers are fixed sizes. */
export interface TensorSpec {
  name: string;
  type: "float32" | "int64";
  shape: readonly (number | "batch")[];
}

export interface OnnxModelSpec {
  inputs: readonly TensorSpec[];
  outputs: readonly TensorSpec[];
  /** Accepted default-domain opsets (inclusive). */
  opset: { min: number; max: number };
}

export interface LoadedOnnxModel {
  file: string;
  sha256: string;
  header: OnnxHeader;
  session: ort.InferenceSession;
}

const formatShape = (shape: readonly (number | string)[]) => `[${shape.map((d) => (typeof d === "number" && d < 0 ? "?" : String(d))).join(", ")}]`;

export async function loadOnnxModel(file: string, spec: OnnxModelSpec, sessionOptions: ort.InferenceSession.SessionOptions = {}): Promise<LoadedOnnxModel> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (error) {
    const missing = (error as NodeJS.ErrnoException).code === "ENOENT";
    throw new ModelError(missing ? "model file is missing" : `cannot read model file: ${(error as Error).message}`, {
      location: { file },
      hint: missing ? "export the model folder with tools/export_biomedclip.py (see docs/embed.md)" : undefined,
      cause: error,
    });
  }
  let header: OnnxHeader;
  try {
    header = readOnnxHeader(bytes);
  } catch (error) {
    throw new ModelError(`not an ONNX model: ${(error as Error).message}`, { location: { file }, cause: error });
  }
  const opset = header.opsets[""];
  if (opset === undefined || opset < spec.opset.min || opset > spec.opset.max) {
    throw new ModelError(
      `wrong opset: expected ${spec.opset.min === spec.opset.max ? spec.opset.min : `${spec.opset.min}..${spec.opset.max}`}, found ${opset ?? "none"}`,
      {
        location: { file, keyPath: "opset_import" },
        hint: "re-export with tools/export_biomedclip.py (opset 17)",
      },
    );
  }
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: "all", ...sessionOptions });
  } catch (error) {
    throw new ModelError(`ONNX Runtime cannot load the model: ${(error as Error).message}`, { location: { file }, cause: error });
  }
  try {
    checkTensors(file, "input", session.inputMetadata, spec.inputs);
    checkTensors(file, "output", session.outputMetadata, spec.outputs);
  } catch (error) {
    await session.release();
    throw error;
  }
  return { file, sha256: sha256(bytes), header, session };
}

function checkTensors(file: string, role: "input" | "output", found: readonly ort.InferenceSession.ValueMetadata[], expected: readonly TensorSpec[]): void {
  const foundNames = found.map((m) => m.name);
  for (const want of expected) {
    const meta = found.find((m) => m.name === want.name);
    const expectedShape = formatShape(want.shape);
    if (!meta) {
      throw new ModelError(
        `${role} "${want.name}" not found: expected ${want.type} ${expectedShape}, the model's ${role}s are ${foundNames.map((n) => `"${n}"`).join(", ") || "none"}`,
        { location: { file, keyPath: `${role}s.${want.name}` } },
      );
    }
    if (!meta.isTensor) throw new ModelError(`${role} "${want.name}" is not a tensor`, { location: { file, keyPath: `${role}s.${want.name}` } });
    const shape = meta.shape;
    const mismatch =
      meta.type !== want.type ||
      shape.length !== want.shape.length ||
      want.shape.some((d, i) => (d === "batch" ? typeof shape[i] === "number" && (shape[i] as number) >= 0 : shape[i] !== d));
    if (mismatch) {
      throw new ModelError(`${role} "${want.name}" has the wrong shape: expected ${want.type} ${expectedShape}, found ${meta.type} ${formatShape(shape)}`, {
        location: { file, keyPath: `${role}s.${want.name}` },
        hint: want.shape.includes("batch") ? "export with a dynamic batch dimension and the shapes in docs/embed.md" : undefined,
      });
    }
  }
  if (role === "input" && found.length !== expected.length) {
    const extra = foundNames.filter((n) => !expected.some((e) => e.name === n));
    throw new ModelError(`unexpected model inputs ${extra.map((n) => `"${n}"`).join(", ")}: expected only ${expected.map((e) => `"${e.name}"`).join(", ")}`, {
      location: { file, keyPath: "inputs" },
    });
  }
}
