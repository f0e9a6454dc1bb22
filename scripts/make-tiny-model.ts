// Writes a tiny Llama-architecture GGUF model with seeded random weights and a byte-fallback
// vocabulary: the shape of ../shared/models/stories260K.gguf, so AI tests run on any machine.
// Usage from tests: `await makeTinyModel(path)`. It writes nonsense text, quickly and deterministically.
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";

/** Sizes of the generated model. */
export interface TinyModelShape {
  vocab: number;
  embd: number;
  heads: number;
  headsKv: number;
  ff: number;
  blocks: number;
  context: number;
  seed: number;
}

/** The default shape, as stories260K but with 2 blocks. */
export const TINY: TinyModelShape = {
  vocab: 512,
  embd: 64,
  heads: 8,
  headsKv: 4,
  ff: 172,
  blocks: 2,
  context: 2048,
  seed: 42,
};

/**
 * A model sized like a small production one for benchmarks (bench:llm --production): about 102 million
 * parameters in F32 (410 MB), so that decoding reads as many bytes per token as a quantized model of a few
 * billion parameters would on a larger machine, and runs at tens of tokens per second on one core here. The
 * vocabulary stays the generated one (its byte fallback and word pieces).
 */
export const PRODUCTION_LIKE: TinyModelShape = {
  vocab: 960,
  embd: 768,
  heads: 12,
  headsKv: 4,
  ff: 2048,
  blocks: 16,
  context: 2048,
  seed: 7,
};

const enum T {
  U32 = 4,
  I32 = 5,
  F32 = 6,
  STRING = 8,
  ARRAY = 9,
}

/** A little-endian byte sink. */
class Sink {
  private chunks: Buffer[] = [];
  size = 0;
  push(b: Buffer) {
    this.chunks.push(b);
    this.size += b.length;
  }
  u32(v: number) {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  i32(v: number) {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    this.push(b);
  }
  u64(v: number) {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  f32(v: number) {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.push(b);
  }
  str(s: string) {
    const b = Buffer.from(s, "utf8");
    this.u64(b.length);
    this.push(b);
  }
  pad(align: number) {
    const n = (align - (this.size % align)) % align;
    if (n) this.push(Buffer.alloc(n));
  }
  buffer() {
    return Buffer.concat(this.chunks);
  }
}

type Value =
  | { t: T.U32 | T.I32 | T.F32; v: number }
  | { t: T.STRING; v: string }
  | { t: T.ARRAY; of: T.STRING; v: string[] }
  | { t: T.ARRAY; of: T.F32 | T.I32; v: number[] };

function writeValue(s: Sink, value: Value) {
  s.u32(value.t);
  if (value.t === T.U32) s.u32(value.v);
  else if (value.t === T.I32) s.i32(value.v);
  else if (value.t === T.F32) s.f32(value.v);
  else if (value.t === T.STRING) s.str(value.v);
  else if (value.t === T.ARRAY) {
    s.u32(value.of);
    s.u64(value.v.length);
    for (const x of value.v) {
      if (value.of === T.STRING) s.str(x as string);
      else if (value.of === T.F32) s.f32(x as number);
      else s.i32(x as number);
    }
  }
}

/** Mulberry32: small, seeded, good enough for weights. */
function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The vocabulary: <unk>, <s>, </s>, 256 byte tokens, then word pieces up to the size. */
function vocabulary(size: number): { tokens: string[]; types: number[]; scores: number[] } {
  const tokens = ["<unk>", "<s>", "</s>"];
  const types = [2, 3, 3];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(6);
  }
  const letters = "etaoinshrdlucmfwypvbgkjqxz".split("");
  const pieces = ["▁", ...letters.map((l) => `▁${l}`), ...letters];
  for (const a of letters) for (const b of letters) pieces.push(`${a}${b}`);
  for (const p of pieces) {
    if (tokens.length >= size) break;
    tokens.push(p);
    types.push(1);
  }
  const scores = tokens.map((_, i) => (types[i] === 1 ? -(i - 259) : 0));
  return { tokens, types, scores };
}

/** Writes the model and returns its sha256. */
export function makeTinyModel(path: string, shape: TinyModelShape = TINY): string {
  const { vocab, embd, heads, headsKv, ff, blocks, context } = shape;
  const kv = (embd / heads) * headsKv;
  const v = vocabulary(vocab);
  const metadata: [string, Value][] = [
    ["general.architecture", { t: T.STRING, v: "llama" }],
    ["general.name", { t: T.STRING, v: "worksynapse-tiny" }],
    ["general.file_type", { t: T.U32, v: 0 }],
    ["llama.context_length", { t: T.U32, v: context }],
    ["llama.embedding_length", { t: T.U32, v: embd }],
    ["llama.feed_forward_length", { t: T.U32, v: ff }],
    ["llama.block_count", { t: T.U32, v: blocks }],
    ["llama.attention.head_count", { t: T.U32, v: heads }],
    ["llama.attention.head_count_kv", { t: T.U32, v: headsKv }],
    ["llama.attention.layer_norm_rms_epsilon", { t: T.F32, v: 1e-5 }],
    ["llama.rope.dimension_count", { t: T.U32, v: embd / heads }],
    ["tokenizer.ggml.model", { t: T.STRING, v: "llama" }],
    ["tokenizer.ggml.tokens", { t: T.ARRAY, of: T.STRING, v: v.tokens }],
    ["tokenizer.ggml.scores", { t: T.ARRAY, of: T.F32, v: v.scores }],
    ["tokenizer.ggml.token_type", { t: T.ARRAY, of: T.I32, v: v.types }],
    ["tokenizer.ggml.unknown_token_id", { t: T.U32, v: 0 }],
    ["tokenizer.ggml.bos_token_id", { t: T.U32, v: 1 }],
    ["tokenizer.ggml.eos_token_id", { t: T.U32, v: 2 }],
  ];
  const tensors: { name: string; dims: number[]; norm?: boolean }[] = [
    { name: "token_embd.weight", dims: [embd, vocab] },
    { name: "output_norm.weight", dims: [embd], norm: true },
    { name: "output.weight", dims: [embd, vocab] },
  ];
  for (let i = 0; i < blocks; i++) {
    tensors.push(
      { name: `blk.${i}.attn_norm.weight`, dims: [embd], norm: true },
      { name: `blk.${i}.attn_q.weight`, dims: [embd, embd] },
      { name: `blk.${i}.attn_k.weight`, dims: [embd, kv] },
      { name: `blk.${i}.attn_v.weight`, dims: [embd, kv] },
      { name: `blk.${i}.attn_output.weight`, dims: [embd, embd] },
      { name: `blk.${i}.ffn_norm.weight`, dims: [embd], norm: true },
      { name: `blk.${i}.ffn_gate.weight`, dims: [embd, ff] },
      { name: `blk.${i}.ffn_up.weight`, dims: [embd, ff] },
      { name: `blk.${i}.ffn_down.weight`, dims: [ff, embd] },
    );
  }
  const ALIGN = 32;
  const s = new Sink();
  s.push(Buffer.from("GGUF", "ascii"));
  s.u32(3);
  s.u64(tensors.length);
  s.u64(metadata.length);
  for (const [key, value] of metadata) {
    s.str(key);
    writeValue(s, value);
  }
  let offset = 0;
  const sizes = tensors.map((t) => t.dims.reduce((a, b) => a * b, 1) * 4);
  tensors.forEach((t, i) => {
    s.str(t.name);
    s.u32(t.dims.length);
    for (const d of t.dims) s.u64(d);
    s.u32(0); // F32
    s.u64(offset);
    offset += Math.ceil((sizes[i] as number) / ALIGN) * ALIGN;
  });
  s.pad(ALIGN);
  const random = rng(shape.seed);
  tensors.forEach((t, i) => {
    const n = (sizes[i] as number) / 4;
    const data = Buffer.alloc(Math.ceil((sizes[i] as number) / ALIGN) * ALIGN);
    for (let k = 0; k < n; k++) data.writeFloatLE(t.norm ? 1 : (random() - 0.5) * 0.2, k * 4);
    s.push(data);
  });
  const bytes = s.buffer();
  writeFileSync(path, bytes);
  return createHash("sha256").update(bytes).digest("hex");
}
