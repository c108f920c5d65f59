/**
 * What an ONNX graph reads besides itself: the `location` of every tensor stored as external data
 * (ONNX `TensorProto.external_data`), found by walking the protobuf wire format, so that the
 * loader can refuse a graph that would read a weights file the manifest does not list (onnxruntime
 * resolves a location it was not handed in memory against the filesystem).
 *
 * The walk visits every place a TensorProto can sit: graph initializers and sparse initializers,
 * node attributes (`t`, `tensors`, `sparse_tensor(s)`) and their subgraphs (`g`, `graphs`: the
 * in-graph files' `If` branches), and model-local functions' nodes.
 */

// field numbers of onnx.proto3
const MODEL_GRAPH = 7;
const MODEL_FUNCTIONS = 25;
const GRAPH_NODE = 1;
const GRAPH_INITIALIZER = 5;
const GRAPH_SPARSE_INITIALIZER = 15;
const NODE_ATTRIBUTE = 5;
const FUNCTION_NODE = 7;
const ATTR_T = 5;
const ATTR_G = 6;
const ATTR_TENSORS = 10;
const ATTR_GRAPHS = 11;
const ATTR_SPARSE_TENSOR = 22;
const ATTR_SPARSE_TENSORS = 23;
const TENSOR_EXTERNAL_DATA = 13;
const TENSOR_DATA_LOCATION = 14;
const SPARSE_VALUES = 1;
const SPARSE_INDICES = 2;
const ENTRY_KEY = 1;
const ENTRY_VALUE = 2;
const EXTERNAL = 1;

/** Deepest nesting of subgraphs / messages the walk follows before it gives up. */
const MAX_NESTING = 64;

export class OnnxFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "OnnxFormatError";
  }
}

type Kind = "model" | "graph" | "node" | "attribute" | "function" | "tensor" | "sparse";

/** What to do with each length-delimited field of a message kind: the kind of the sub-message. */
const CHILDREN: Record<Kind, Record<number, Kind>> = {
  model: { [MODEL_GRAPH]: "graph", [MODEL_FUNCTIONS]: "function" },
  graph: { [GRAPH_NODE]: "node", [GRAPH_INITIALIZER]: "tensor", [GRAPH_SPARSE_INITIALIZER]: "sparse" },
  node: { [NODE_ATTRIBUTE]: "attribute" },
  function: { [FUNCTION_NODE]: "node" },
  attribute: {
    [ATTR_T]: "tensor", [ATTR_G]: "graph", [ATTR_TENSORS]: "tensor", [ATTR_GRAPHS]: "graph",
    [ATTR_SPARSE_TENSOR]: "sparse", [ATTR_SPARSE_TENSORS]: "sparse",
  },
  sparse: { [SPARSE_VALUES]: "tensor", [SPARSE_INDICES]: "tensor" },
  tensor: {},
};

class Reader {
  pos: number;
  constructor(readonly bytes: Uint8Array, start: number, readonly end: number) {
    this.pos = start;
  }

  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new OnnxFormatError("truncated varint");
      const b = this.bytes[this.pos++];
      result += (b & 0x7f) * scale;
      scale *= 128;
      if ((b & 0x80) === 0) return result;
    }
    throw new OnnxFormatError("varint longer than 10 bytes");
  }

  skip(n: number): void {
    if (!Number.isSafeInteger(n) || n < 0 || this.pos + n > this.end) throw new OnnxFormatError("truncated field");
    this.pos += n;
  }
}

const utf8 = new TextDecoder("utf-8");

/**
 * Every external-data location the ONNX model in `bytes` names (deduplicated, in order of first
 * appearance); a tensor marked EXTERNAL without a location gives "". OnnxFormatError when the bytes
 * are not a well-formed protobuf message.
 */
export function externalDataLocations(bytes: Uint8Array): string[] {
  const found = new Set<string>();
  walk(bytes, 0, bytes.length, "model", 0, found);
  return [...found];
}

function walk(bytes: Uint8Array, start: number, end: number, kind: Kind, depth: number, found: Set<string>): void {
  if (depth > MAX_NESTING) throw new OnnxFormatError(`messages nested deeper than ${MAX_NESTING} levels`);
  const r = new Reader(bytes, start, end);
  const children = CHILDREN[kind];
  let external = false;
  const locations: string[] = [];
  while (r.pos < end) {
    const key = r.varint();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (field === 0) throw new OnnxFormatError("field number 0");
    switch (wire) {
      case 0: {
        const value = r.varint();
        if (kind === "tensor" && field === TENSOR_DATA_LOCATION && value === EXTERNAL) external = true;
        break;
      }
      case 1:
        r.skip(8);
        break;
      case 5:
        r.skip(4);
        break;
      case 2: {
        const length = r.varint();
        const bodyStart = r.pos;
        r.skip(length);
        if (kind === "tensor" && field === TENSOR_EXTERNAL_DATA) {
          const entry = readEntry(bytes, bodyStart, bodyStart + length);
          if (entry.key === "location") locations.push(entry.value ?? "");
        } else if (children[field] !== undefined) {
          walk(bytes, bodyStart, bodyStart + length, children[field], depth + 1, found);
        }
        break;
      }
      default:
        throw new OnnxFormatError(`wire type ${wire} is not used by ONNX`);
    }
  }
  if (kind === "tensor") {
    for (const location of locations) found.add(location);
    if (external && locations.length === 0) found.add("");
  }
}

function readEntry(bytes: Uint8Array, start: number, end: number): { key?: string; value?: string } {
  const r = new Reader(bytes, start, end);
  const out: { key?: string; value?: string } = {};
  while (r.pos < end) {
    const key = r.varint();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 2) {
      const length = r.varint();
      const s = r.pos;
      r.skip(length);
      if (field === ENTRY_KEY) out.key = utf8.decode(bytes.subarray(s, s + length));
      else if (field === ENTRY_VALUE) out.value = utf8.decode(bytes.subarray(s, s + length));
    } else if (wire === 0) r.varint();
    else if (wire === 1) r.skip(8);
    else if (wire === 5) r.skip(4);
    else throw new OnnxFormatError(`wire type ${wire} is not used by ONNX`);
  }
  return out;
}
