package dev.mmedge.core;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * What an ONNX graph reads besides itself: the {@code location} of every tensor stored as external
 * data (ONNX {@code TensorProto.external_data}), found by walking the protobuf wire format, so that
 * the loader can refuse a graph that would read a weights file the manifest does not list (ONNX
 * Runtime resolves a location it was not handed in memory against the filesystem, which may be
 * outside the bundle). The same walk as the JavaScript runtime's (runtimes/js/src/onnx.ts).
 *
 * <p>It visits every place a TensorProto can sit: graph initializers and sparse initializers, node
 * attributes ({@code t}, {@code tensors}, {@code sparse_tensor(s)}) and their subgraphs ({@code g},
 * {@code graphs}: the in-graph files' {@code If} branches), and model-local functions' nodes.
 */
public final class OnnxExternalData {
    // field numbers of onnx.proto3
    private static final int MODEL_GRAPH = 7;
    private static final int MODEL_FUNCTIONS = 25;
    private static final int GRAPH_NODE = 1;
    private static final int GRAPH_INITIALIZER = 5;
    private static final int GRAPH_SPARSE_INITIALIZER = 15;
    private static final int NODE_ATTRIBUTE = 5;
    private static final int FUNCTION_NODE = 7;
    private static final int ATTR_T = 5;
    private static final int ATTR_G = 6;
    private static final int ATTR_TENSORS = 10;
    private static final int ATTR_GRAPHS = 11;
    private static final int ATTR_SPARSE_TENSOR = 22;
    private static final int ATTR_SPARSE_TENSORS = 23;
    private static final int TENSOR_EXTERNAL_DATA = 13;
    private static final int TENSOR_DATA_LOCATION = 14;
    private static final int SPARSE_VALUES = 1;
    private static final int SPARSE_INDICES = 2;
    private static final int ENTRY_KEY = 1;
    private static final int ENTRY_VALUE = 2;
    private static final int EXTERNAL = 1;
    /** Deepest nesting of subgraphs / messages the walk follows before it gives up. */
    private static final int MAX_NESTING = 64;

    private enum Kind { MODEL, GRAPH, NODE, ATTRIBUTE, FUNCTION, TENSOR, SPARSE }

    private static final Map<Kind, Map<Integer, Kind>> CHILDREN = new HashMap<>();

    private static void child(Kind parent, int field, Kind kind) {
        Map<Integer, Kind> m = CHILDREN.get(parent);
        if (m == null) CHILDREN.put(parent, m = new HashMap<>());
        m.put(field, kind);
    }

    static {
        child(Kind.MODEL, MODEL_GRAPH, Kind.GRAPH);
        child(Kind.MODEL, MODEL_FUNCTIONS, Kind.FUNCTION);
        child(Kind.GRAPH, GRAPH_NODE, Kind.NODE);
        child(Kind.GRAPH, GRAPH_INITIALIZER, Kind.TENSOR);
        child(Kind.GRAPH, GRAPH_SPARSE_INITIALIZER, Kind.SPARSE);
        child(Kind.NODE, NODE_ATTRIBUTE, Kind.ATTRIBUTE);
        child(Kind.FUNCTION, FUNCTION_NODE, Kind.NODE);
        child(Kind.ATTRIBUTE, ATTR_T, Kind.TENSOR);
        child(Kind.ATTRIBUTE, ATTR_G, Kind.GRAPH);
        child(Kind.ATTRIBUTE, ATTR_TENSORS, Kind.TENSOR);
        child(Kind.ATTRIBUTE, ATTR_GRAPHS, Kind.GRAPH);
        child(Kind.ATTRIBUTE, ATTR_SPARSE_TENSOR, Kind.SPARSE);
        child(Kind.ATTRIBUTE, ATTR_SPARSE_TENSORS, Kind.SPARSE);
        child(Kind.SPARSE, SPARSE_VALUES, Kind.TENSOR);
        child(Kind.SPARSE, SPARSE_INDICES, Kind.TENSOR);
    }

    /** The bytes are not a well-formed protobuf message. */
    public static final class FormatException extends Exception {
        FormatException(String message) {
            super(message);
        }
    }

    private OnnxExternalData() {
    }

    private static final class Reader {
        final byte[] bytes;
        final int end;
        int pos;

        Reader(byte[] bytes, int start, int end) {
            this.bytes = bytes;
            this.pos = start;
            this.end = end;
        }

        long varint() throws FormatException {
            long result = 0;
            for (int i = 0; i < 10; i++) {
                if (pos >= end) throw new FormatException("truncated varint");
                int b = bytes[pos++] & 0xff;
                result |= (long) (b & 0x7f) << (7 * i);
                if ((b & 0x80) == 0) return result;
            }
            throw new FormatException("varint longer than 10 bytes");
        }

        void skip(long n) throws FormatException {
            if (n < 0 || n > end - pos) throw new FormatException("truncated field");
            pos += (int) n;
        }
    }

    /**
     * Every external-data location the ONNX model in `bytes` names (deduplicated, in order of first
     * appearance); a tensor marked EXTERNAL without a location gives "".
     */
    public static List<String> locations(byte[] bytes) throws FormatException {
        Set<String> found = new LinkedHashSet<>();
        walk(bytes, 0, bytes.length, Kind.MODEL, 0, found);
        return new ArrayList<>(found);
    }

    private static void walk(byte[] bytes, int start, int end, Kind kind, int depth, Set<String> found) throws FormatException {
        if (depth > MAX_NESTING) throw new FormatException("messages nested deeper than " + MAX_NESTING + " levels");
        Reader r = new Reader(bytes, start, end);
        Map<Integer, Kind> children = CHILDREN.get(kind);
        boolean external = false;
        List<String> locations = new ArrayList<>();
        while (r.pos < end) {
            long key = r.varint();
            long field = key >>> 3;
            int wire = (int) (key & 7);
            if (field == 0) throw new FormatException("field number 0");
            switch (wire) {
                case 0: {
                    long value = r.varint();
                    if (kind == Kind.TENSOR && field == TENSOR_DATA_LOCATION && value == EXTERNAL) external = true;
                    break;
                }
                case 1:
                    r.skip(8);
                    break;
                case 5:
                    r.skip(4);
                    break;
                case 2: {
                    long length = r.varint();
                    int bodyStart = r.pos;
                    r.skip(length);
                    int bodyEnd = r.pos;
                    if (kind == Kind.TENSOR && field == TENSOR_EXTERNAL_DATA) {
                        String[] entry = readEntry(bytes, bodyStart, bodyEnd);
                        if ("location".equals(entry[0])) locations.add(entry[1] == null ? "" : entry[1]);
                    } else if (children != null && field <= Integer.MAX_VALUE && children.containsKey((int) field)) {
                        walk(bytes, bodyStart, bodyEnd, children.get((int) field), depth + 1, found);
                    }
                    break;
                }
                default:
                    throw new FormatException("wire type " + wire + " is not used by ONNX");
            }
        }
        if (kind == Kind.TENSOR) {
            found.addAll(locations);
            if (external && locations.isEmpty()) found.add("");
        }
    }

    private static String[] readEntry(byte[] bytes, int start, int end) throws FormatException {
        Reader r = new Reader(bytes, start, end);
        String[] out = new String[2];
        while (r.pos < end) {
            long key = r.varint();
            long field = key >>> 3;
            int wire = (int) (key & 7);
            if (wire == 2) {
                long length = r.varint();
                int s = r.pos;
                r.skip(length);
                String text = new String(bytes, s, (int) length, StandardCharsets.UTF_8);
                if (field == ENTRY_KEY) out[0] = text;
                else if (field == ENTRY_VALUE) out[1] = text;
            } else if (wire == 0) {
                r.varint();
            } else if (wire == 1) {
                r.skip(8);
            } else if (wire == 5) {
                r.skip(4);
            } else {
                throw new FormatException("wire type " + wire + " is not used by ONNX");
            }
        }
        return out;
    }

    /** An initializer of a model's main graph whose data is external (what a runner must supply from the weights file). */
    public static final class ExternalTensor {
        public final String name;
        /** ONNX TensorProto.DataType (1 float, 2 uint8, 3 int8, 6 int32, 7 int64, 9 bool, 11 double, ...). */
        public final int dataType;
        public final long[] dims;
        public final String location;
        public final long offset;
        /** Bytes, or -1 when the graph gives none (then the data runs to the end of the file). */
        public final long length;

        ExternalTensor(String name, int dataType, long[] dims, String location, long offset, long length) {
            this.name = name;
            this.dataType = dataType;
            this.dims = dims;
            this.location = location;
            this.offset = offset;
            this.length = length;
        }
    }

    private static final int TENSOR_DIMS = 1;
    private static final int TENSOR_DATA_TYPE = 2;
    private static final int TENSOR_NAME = 8;

    /**
     * The external initializers of the model's main graph (ModelProto.graph.initializer with
     * data_location EXTERNAL), in order: what ONNX Runtime's AddExternalInitializers replaces so
     * that a graph opened from bytes reads its weights from memory (the app's runner for ONNX
     * graphs with one shared external_data file).
     */
    public static List<ExternalTensor> externalInitializers(byte[] bytes) throws FormatException {
        List<ExternalTensor> out = new ArrayList<>();
        Reader model = new Reader(bytes, 0, bytes.length);
        while (model.pos < model.end) {
            int[] span = field(model);
            if (span == null || span[0] != MODEL_GRAPH) continue;
            Reader graph = new Reader(bytes, span[1], span[2]);
            while (graph.pos < graph.end) {
                int[] init = field(graph);
                if (init != null && init[0] == GRAPH_INITIALIZER) {
                    ExternalTensor t = tensor(bytes, init[1], init[2]);
                    if (t != null) out.add(t);
                }
            }
        }
        return out;
    }

    /** The next field of r: {number, start, end} of a length-delimited one, null for any other (skipped). */
    private static int[] field(Reader r) throws FormatException {
        long key = r.varint();
        long number = key >>> 3;
        int wire = (int) (key & 7);
        if (number == 0) throw new FormatException("field number 0");
        switch (wire) {
            case 0:
                r.varint();
                return null;
            case 1:
                r.skip(8);
                return null;
            case 5:
                r.skip(4);
                return null;
            case 2: {
                long length = r.varint();
                int start = r.pos;
                r.skip(length);
                return new int[] {number > Integer.MAX_VALUE ? -1 : (int) number, start, r.pos};
            }
            default:
                throw new FormatException("wire type " + wire + " is not used by ONNX");
        }
    }

    /** A TensorProto stored externally, or null when its data is in the graph. */
    private static ExternalTensor tensor(byte[] bytes, int start, int end) throws FormatException {
        Reader r = new Reader(bytes, start, end);
        String name = "";
        int dataType = 0;
        boolean external = false;
        List<Long> dims = new ArrayList<>();
        Map<String, String> entries = new HashMap<>();
        while (r.pos < end) {
            long key = r.varint();
            long number = key >>> 3;
            int wire = (int) (key & 7);
            if (wire == 0) {
                long value = r.varint();
                if (number == TENSOR_DIMS) dims.add(value);
                else if (number == TENSOR_DATA_TYPE) dataType = (int) value;
                else if (number == TENSOR_DATA_LOCATION) external = value == EXTERNAL;
            } else if (wire == 2) {
                long length = r.varint();
                int s = r.pos;
                r.skip(length);
                if (number == TENSOR_DIMS) { // packed
                    Reader packed = new Reader(bytes, s, r.pos);
                    while (packed.pos < packed.end) dims.add(packed.varint());
                } else if (number == TENSOR_NAME) {
                    name = new String(bytes, s, (int) length, StandardCharsets.UTF_8);
                } else if (number == TENSOR_EXTERNAL_DATA) {
                    String[] entry = readEntry(bytes, s, r.pos);
                    if (entry[0] != null) entries.put(entry[0], entry[1] == null ? "" : entry[1]);
                }
            } else if (wire == 1) {
                r.skip(8);
            } else if (wire == 5) {
                r.skip(4);
            } else {
                throw new FormatException("wire type " + wire + " is not used by ONNX");
            }
        }
        if (!external) return null;
        long[] shape = new long[dims.size()];
        for (int i = 0; i < shape.length; i++) shape[i] = dims.get(i);
        try {
            long offset = entries.containsKey("offset") ? Long.parseLong(entries.get("offset")) : 0;
            long length = entries.containsKey("length") ? Long.parseLong(entries.get("length")) : -1;
            if (offset < 0 || length < -1) throw new FormatException("negative external data offset or length for " + name);
            return new ExternalTensor(name, dataType, shape, entries.get("location"), offset, length);
        } catch (NumberFormatException exc) {
            throw new FormatException("external data offset / length of " + name + " is not a number");
        }
    }

    /** The folder part of a bundle path ("" at the root). */
    static String dirOf(String rel) {
        int i = rel.lastIndexOf('/');
        return i < 0 ? "" : rel.substring(0, i);
    }

    /**
     * BundleException unless the ONNX graph `path` (its verified `bytes`) reads external data from
     * `external` only (the artifact's listed external_data, which must lie beside it), or from
     * nothing when `external` is null: code unlisted for another location, self-check for bytes
     * that are not an ONNX file, inconsistent for a weights file in another folder.
     */
    public static void check(String path, byte[] bytes, String external) {
        if (external != null && !dirOf(external).equals(dirOf(path))) {
            throw new BundleException(BundleException.INCONSISTENT, path + " reads its weights from " + external
                    + ", which is not in the same folder; export the bundle again", null, external, null);
        }
        List<String> locations;
        try {
            locations = locations(bytes);
        } catch (FormatException exc) {
            throw new BundleException(BundleException.SELF_CHECK, path + " is not a well-formed ONNX file (" + exc.getMessage()
                    + "); export the bundle again", exc, path, null);
        }
        String allowed = external == null ? null : external.substring(external.lastIndexOf('/') + 1);
        List<String> stray = new ArrayList<>();
        for (String location : locations) if (!location.equals(allowed)) stray.add(location);
        if (!stray.isEmpty()) {
            StringBuilder shown = new StringBuilder();
            for (int i = 0; i < Math.min(5, stray.size()); i++) {
                if (i > 0) shown.append(", ");
                shown.append('"').append(BundleLoader.shortText(stray.get(i), 80)).append('"');
            }
            throw new BundleException(BundleException.UNLISTED, path + " reads external data from " + shown + ", "
                    + (allowed == null ? "but the manifest lists no external_data for it"
                    : "not the listed external_data \"" + external + "\"")
                    + "; a graph may read only its listed weights file: export the bundle again", null, path, null);
        }
    }
}
