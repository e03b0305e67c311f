/** An embedding's vector as the ledger stores it (`Item.vector`): float32 bytes, little-endian, 4 a dimension. */
export function vectorBytes(vector: Float32Array): Uint8Array {
  const out = new Uint8Array(vector.length * 4)
  const view = new DataView(out.buffer)
  for (let i = 0; i < vector.length; i++) view.setFloat32(i * 4, vector[i]!, true)
  return out
}

/** The outcomes as JSON for the ledger's statements, without their vectors (written apart, as bytes). */
export function outcomesJson<T extends { vector?: Float32Array | undefined }>(outcomes: T[]): string {
  if (!outcomes.some((o) => o.vector)) return JSON.stringify(outcomes)
  return JSON.stringify(outcomes.map(({ vector: _, ...rest }) => rest))
}
