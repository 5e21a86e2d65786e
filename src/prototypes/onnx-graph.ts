/**
 * A minimal protobuf writer for the few ONNX messages a small elementwise + MatMul graph needs.
 * Building the bytes here keeps the runtime free of a protobuf/ONNX schema dependency (onnx-proto
 * is a dev dependency only); tests load the result with onnxruntime-node, which rejects any
 * malformed model.
 */
class ProtoWriter {
  private readonly bytes: number[] = [];

  private varint(value: number): void {
    let v = value;
    while (v > 0x7f) {
      this.bytes.push((v & 0x7f) | 0x80);
      v = Math.floor(v / 128);
    }
    this.bytes.push(v);
  }

  private tag(field: number, wireType: 0 | 2): void {
    this.varint(field * 8 + wireType);
  }

  int(field: number, value: number): this {
    this.tag(field, 0);
    this.varint(value);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytesField(field, new TextEncoder().encode(value));
  }

  message(field: number, build: (w: ProtoWriter) => void): this {
    const inner = new ProtoWriter();
    build(inner);
    return this.bytesField(field, inner.finish());
  }

  private bytesField(field: number, data: Uint8Array): this {
    this.tag(field, 2);
    this.varint(data.length);
    for (const b of data) this.bytes.push(b);
    return this;
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

const FLOAT = 1;
const ATTRIBUTE_INT = 2;

export interface GraphNode {
  op: string;
  inputs: string[];
  output: string;
  /** Integer attributes (e.g. Gemm's transB). */
  intAttributes?: Record<string, number>;
}

/** A value's shape: numbers are fixed sizes, strings are symbolic (dynamic) dimensions. */
export interface GraphValue {
  name: string;
  shape: (number | string)[];
}

/** Encodes a float32 graph of standard ONNX operators as a ModelProto (IR 8, opset 17). */
export function encodeOnnxModel(graph: { name: string; inputs: GraphValue[]; outputs: GraphValue[]; nodes: GraphNode[] }): Uint8Array {
  const valueInfo = (w: ProtoWriter, v: GraphValue) => {
    w.string(1, v.name).message(2, (type) =>
      type.message(1, (tensor) =>
        tensor.int(1, FLOAT).message(2, (shape) => {
          for (const dim of v.shape) shape.message(1, (d) => (typeof dim === "number" ? d.int(1, dim) : d.string(2, dim)));
        }),
      ),
    );
  };
  return new ProtoWriter()
    .int(1, 8)
    .string(2, "prolearn")
    .message(7, (g) => {
      graph.nodes.forEach((node, i) =>
        g.message(1, (n) => {
          for (const input of node.inputs) n.string(1, input);
          n.string(2, node.output).string(3, `${node.op.toLowerCase()}_${i}`).string(4, node.op);
          for (const [name, value] of Object.entries(node.intAttributes ?? {})) n.message(5, (a) => a.string(1, name).int(3, value).int(20, ATTRIBUTE_INT));
        }),
      );
      g.string(2, graph.name);
      for (const input of graph.inputs) g.message(11, (w) => valueInfo(w, input));
      for (const output of graph.outputs) g.message(12, (w) => valueInfo(w, output));
    })
    .message(8, (op) => op.string(1, "").int(2, 17))
    .finish();
}
