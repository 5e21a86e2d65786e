import path from "node:path";
import { ArtifactError, ModelError } from "../errors.js";
import type { StageContext } from "../pipeline/stage.js";
import { ArtifactRegistry } from "../prototypes/registry.js";
import { readPrototypes, type PrototypeSpace } from "../segmenter/embeddings.js";

/**
 * The prototype space the train stage learns with, loaded through the verified artifact path (as
 * `prolearn prototypes query` does), never straight from the store: the artifact the prototypes
 * stage registered is resolved in the workdir's registry and re-hashed against its manifest, the
 * registered manifest bytes and the digest the upstream output names. A tampered copy stops the
 * stage with an ArtifactError instead of training on changed prototypes.
 */
export async function loadVerifiedPrototypes(
  ctx: StageContext<unknown>,
): Promise<PrototypeSpace & { artifact: { name: string; version: number; digest: string; dir: string } }> {
  const input = ctx.inputs.prototypes;
  if (!input) throw new ModelError(`stage ${ctx.stage} needs the prototype space from stage prototypes`, { hint: "add `prototypes: {}` to the pipeline" });
  const artifact = input.summary.artifact as { name?: unknown; digest?: unknown } | undefined;
  const name = typeof artifact?.name === "string" ? artifact.name : undefined;
  const digest = typeof artifact?.digest === "string" ? artifact.digest : undefined;
  if (!name || !digest) {
    throw new ArtifactError("the prototypes stage's output names no registered artifact (summary.artifact.name / digest)", {
      location: { file: input.dir },
      hint: "rerun it: prolearn run <pipeline> --force prototypes",
    });
  }
  const registry = ArtifactRegistry.open(ctx.pipeline.workdir);
  try {
    const version = registry.list(name).find((v) => v.digest === digest);
    if (!version) {
      throw new ArtifactError(`artifact ${name} with digest ${digest.slice(0, 12)}... is not registered in ${ctx.pipeline.workdir}`, {
        hint: "rerun the prototypes stage to publish and register it (prolearn run <pipeline> --force prototypes), or recover the registry with prolearn catalog rebuild",
      });
    }
    // Re-hashes every file, checks the manifest against the registered copy and the digest.
    const verified = await registry.pathOf(`${name}@${version.version}`);
    const space = await readPrototypes(path.join(verified.path, "prototypes.parquet"));
    return { ...space, artifact: { name, version: verified.version, digest, dir: verified.path } };
  } finally {
    registry.close();
  }
}
