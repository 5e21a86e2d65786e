/**
 * What this package's WGSL kernels need from tfjs-backend-webgpu. That package is optional and
 * loaded at run time, so its types are not imported: the program objects below have the
 * structural shape its `runWebGPUProgram` expects (variable names bound in order after the output,
 * a uniform struct tail, a flat dispatch, a shader cache key, and `main(index)` as the body).
 */
import type { TensorInfo } from "@tensorflow/tfjs-core";

export const WORKGROUP_SIZE = 64;

export interface Uniform {
  type: "int32" | "float32";
  data: number[];
}

export interface WebgpuBackendLike {
  runWebGPUProgram(program: object, inputs: TensorInfo[], outputDtype: "float32", uniforms: Uniform[]): TensorInfo;
  disposeData(dataId: object): boolean;
}

/** A flat dispatch; tfjs-backend-webgpu folds it into 2-D or 3-D when it exceeds the device's limit. */
export function flatDispatch(threads: number): [number, number, number] {
  return [Math.ceil(threads / WORKGROUP_SIZE), 1, 1];
}

export const int = (value: number): Uniform => ({ type: "int32", data: [value] });
export const float = (value: number): Uniform => ({ type: "float32", data: [value] });

/**
 * One thread per output element: `body` runs with `index` the flat output index, after the bound
 * check. Every name in `variableNames` must appear in `body`: the pipeline layout is derived from
 * the bindings a shader uses, and tfjs binds them all. A program whose threads each write several
 * outputs passes `threads` (dispatched) and `bound` (the WGSL bound on `index`); one that reads its
 * inputs as vectors passes `variableComponents` (e.g. 4 per input: `array<vec4<f32>>`).
 */
export class ElementProgram {
  readonly workgroupSize: [number, number, number] = [WORKGROUP_SIZE, 1, 1];
  readonly size = true;
  readonly dispatchLayout: { x: number[] };
  readonly dispatch: [number, number, number];
  private readonly bound: string;
  readonly variableComponents?: number[];

  constructor(
    readonly shaderKey: string,
    readonly variableNames: string[],
    readonly outputShape: number[],
    readonly uniforms: string,
    private readonly body: string,
    options: { threads?: number; bound?: string; variableComponents?: number[] } = {},
  ) {
    this.dispatchLayout = { x: outputShape.map((_, i) => i) };
    this.dispatch = flatDispatch(options.threads ?? outputShape.reduce((a, b) => a * b, 1));
    this.bound = options.bound ?? "uniforms.size";
    if (options.variableComponents) this.variableComponents = options.variableComponents;
    // tfjs labels pipelines and profiler entries (`bench train --profile`) with the constructor's
    // name; the shader key says which of this package's programs it is.
    Object.defineProperty(this, "constructor", { value: { name: shaderKey }, enumerable: false });
  }

  getUserCode(): string {
    return `
      fn main(index : i32) {
        if (index >= ${this.bound}) {
          return;
        }
        ${this.body}
      }`;
  }
}
