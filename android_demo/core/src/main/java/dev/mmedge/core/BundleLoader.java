package dev.mmedge.core;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.channels.SeekableByteChannel;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.OpenOption;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * Loads a bundle directory with every check of docs/bundle-format.md ("Loading a bundle"), in its
 * order and with its step numbers; no file is read before the checks that concern it have passed.
 * Each refusal is a {@link BundleException} whose {@link BundleException#code() code()} is the
 * spec's reason code:
 * <ol>
 *   <li>manifest.json: a regular file (lstat: no link, FIFO, device), opened without following links,
 *       at most 8 MiB ({@code manifest-missing}, {@code manifest-not-regular}, {@code manifest-too-large});</li>
 *   <li>with a verification key (Options.verifyKeyPem): manifest.sig verified over those bytes before
 *       they are parsed ({@link Signatures}: {@code signature-missing}, {@code -malformed}, {@code -key},
 *       {@code -invalid});</li>
 *   <li>strict UTF-8 JSON, one object, nested at most 32 levels, no BOM, no repeated key, no number
 *       beyond a double or integer beyond 2^53 - 1, no unpaired surrogate ({@link Json}: {@code json});</li>
 *   <li>schema_version the JSON integer 1 ({@code schema-version}); a manifest with a kind is not a
 *       classifier bundle ({@code unsupported}; captioning bundles, kind "caption", load with
 *       {@link CaptionLoader} / CaptionEngine, which share steps 1-4 and 7-9); an adapted encoder's
 *       preparation (preprocessing.resize "pillow-bicubic", tokenizer.kind "bert-wordpiece"), two
 *       images per query (preprocessing.num_images 2, NLVR2) and head "match-score" (an image-text
 *       retrieval model) are implemented ({@link Preprocessor#stretched}, {@link BertWordPieceTokenizer},
 *       {@link Engine}) and checked like any other manifest;</li>
 *   <li>the JSON Schema mmedge/bundle/manifest.schema.json ({@code schema}; {@code path} when every
 *       violation is of the schema's bundle-path rule);</li>
 *   <li>consistency (keep ratios, exits, stage inputs and outputs, shapes, artifacts, the fixed rules,
 *       two images only with the adapted preparation and without modality_pruning or in_graph,
 *       match-score only with task "match" and labels ["no", "yes"]: {@code inconsistent}); then rollback, the release name and sequence the app asks for
 *       ({@code rollback});</li>
 *   <li>paths: relative, normalised ({@code path}); named paths listed ({@code unlisted});</li>
 *   <li>nothing inside the bundle but manifest.json, manifest.sig, the listed files and the folders on
 *       their way: an unlisted file, link, FIFO or folder is refused, never opened ({@code unlisted});</li>
 *   <li>files: every component lstat-checked (no links), a regular file ({@code file-missing},
 *       {@code file-not-regular}) of the listed size ({@code size-mismatch}), all sizes before any
 *       hash, then the SHA-256 ({@code hash-mismatch});</li>
 *   <li>the tokenizer agrees with the manifest ({@code tokenizer}; for "bert-wordpiece" every setting
 *       the file gives equals the manifest's).</li>
 * </ol>
 * {@link Engine#load} then makes steps 11 (the external data of ONNX stage graphs, {@code unlisted})
 * and 12 (open the stages and run the self-check, {@code self-check}).
 * Java cannot open with O_NONBLOCK: a FIFO is refused by the lstat before the open, so only a FIFO
 * swapped in between those two calls could block.
 */
public final class BundleLoader {
    public static final int SCHEMA_VERSION = 1;
    public static final String MANIFEST_FILE = "manifest.json";
    public static final String SIGNATURE_FILE = "manifest.sig";
    public static final int MAX_MANIFEST_BYTES = 8 << 20;
    public static final int MAX_DEPTH = 32;
    public static final long MAX_TOKENIZER_BYTES = 64L << 20;
    public static final int MAX_PATH_CHARS = 512;
    public static final int MAX_LISTED = 10;
    public static final List<String> STAGE0_INPUTS = Arrays.asList("pixel_values", "input_ids", "text_mask");
    public static final List<String> LATER_INPUTS = Arrays.asList("hidden_in", "attention_mask");
    public static final List<String> STAGE0_OUTPUTS =
            Arrays.asList("hidden", "logits", "confidence", "attention_mask", "kept_index");
    public static final List<String> LATER_OUTPUTS = Arrays.asList("hidden", "logits", "confidence");
    /** Where the schema is on the classpath (the build copies mmedge/bundle/manifest.schema.json there). */
    public static final String SCHEMA_RESOURCE = "/dev/mmedge/core/manifest.schema.json";

    private static JsonSchema cachedSchema;

    /**
     * What a successful load of either kind of bundle gives (a classifier bundle's {@link Loaded}, a
     * captioning bundle's {@link CaptionLoader.Loaded}, each with its typed manifest).
     */
    public abstract static class Checked<M> {
        public final Path root;
        /** The checked manifest, typed by its kind. */
        public final M manifest;
        /** The exact bytes of manifest.json that were checked and parsed. */
        public final byte[] manifestBytes;
        public final WordTokenizer tokenizer;
        /** Verified bytes of the selected files, by bundle-relative path. */
        public final Map<String, byte[]> files;
        /** The manifest's `files`: each listed path's size and SHA-256. */
        final Map<String, Manifest.FileEntry> listedFiles;

        Checked(Path root, M manifest, Map<String, Manifest.FileEntry> listedFiles, byte[] manifestBytes, WordTokenizer tokenizer,
                Map<String, byte[]> files) {
            this.root = root;
            this.manifest = manifest;
            this.listedFiles = listedFiles;
            this.manifestBytes = manifestBytes;
            this.tokenizer = tokenizer;
            this.files = files;
        }
    }

    /** What a successful load of a classifier bundle gives. */
    public static final class Loaded extends Checked<Manifest> {
        Loaded(Path root, Manifest manifest, byte[] manifestBytes, WordTokenizer tokenizer, Map<String, byte[]> files) {
            super(root, manifest, manifest.files, manifestBytes, tokenizer, files);
        }
    }

    /** Chooses, after steps 1-7, which files to keep the verified bytes of (it may throw to refuse). */
    public interface Selector {
        Collection<String> select(Manifest manifest);
    }

    private BundleLoader() {
    }

    // ------------------------------------------------------------------------------ messages
    static String shortText(String text, int limit) {
        return text.length() <= limit ? text : text.substring(0, limit - 3) + "...";
    }

    /** At most ten names, each cut to 80 characters, as the Python runtime quotes them. */
    static String listing(List<String> names) {
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < Math.min(names.size(), MAX_LISTED); i++) {
            if (i > 0) out.append(", ");
            out.append(shortText(names.get(i), 80));
        }
        if (names.size() > MAX_LISTED) out.append(" (and ").append(names.size() - MAX_LISTED).append(" more)");
        return out.toString();
    }

    private static String repr(String s) {
        return "'" + shortText(s, 80) + "'";
    }

    // ------------------------------------------------------------------------------ schema
    /** The manifest schema from the classpath. */
    public static synchronized JsonSchema schema() {
        if (cachedSchema == null) cachedSchema = readSchema(SCHEMA_RESOURCE, "mmedge/bundle/manifest.schema.json", "manifest schema");
        return cachedSchema;
    }

    /** A schema from the classpath at `resource`, where the build copies the repository's `source` file. */
    static JsonSchema readSchema(String resource, String source, String what) {
        try (InputStream in = BundleLoader.class.getResourceAsStream(resource)) {
            if (in == null) {
                throw new IllegalStateException(source.substring(source.lastIndexOf('/') + 1) + " is not on the classpath at "
                        + resource + "; the build copies it from " + source);
            }
            return new JsonSchema(Json.obj(Json.parse(IO.readAll(in, 1 << 22), 64)));
        } catch (IOException | Json.ParseException exc) {
            throw new IllegalStateException("cannot read the " + what + ": " + exc.getMessage(), exc);
        }
    }

    /**
     * Step 5: the manifest validates against `schema` ({@code schema}; {@code path} when every
     * violation is of the schema's bundle-path rule); `what` names the schema in the message.
     */
    static void checkSchema(JsonSchema schema, Map<String, Object> raw, String where, String what) {
        JsonSchema.Violations violations = schema.violations(raw);
        if (!violations.problems.isEmpty()) {
            throw new BundleException(violations.pathRuleOnly ? BundleException.PATH : BundleException.SCHEMA, where
                    + " does not match the " + what + " (export the bundle again with a matching mmedge):\n  "
                    + join(violations.problems, 10));
        }
    }

    /** Step 6's refusal ({@code inconsistent}) when there are problems. */
    static void checkConsistent(List<String> problems, String where) {
        if (!problems.isEmpty()) {
            throw new BundleException(BundleException.INCONSISTENT, where + " is inconsistent:\n  " + join(problems, 10)
                    + "\nThe manifest was edited or is corrupt: export the bundle again");
        }
    }

    /** Step 10's input: the verified bytes of tokenizer.file ({@code tokenizer} when it is not a listed file). */
    static byte[] tokenizerBytes(Map<String, byte[]> files, String tokenizerFile) {
        byte[] bytes = files.get(tokenizerFile);
        if (bytes == null) {
            throw new BundleException(BundleException.TOKENIZER, "tokenizer.file '" + tokenizerFile
                    + "' is not a listed file; export the bundle again");
        }
        return bytes;
    }

    /** A tokenizer file the tokenizer classes could not read is refused with code {@code tokenizer}. */
    static BundleException tokenizerRefusal(BundleException exc) {
        return exc.code().equals(BundleException.BUNDLE) ? exc.withCode(BundleException.TOKENIZER) : exc;
    }

    /** A manifest's release.sequence (what an app stores as its next minimum), or null when it has none. */
    static Long releaseSequence(Map<String, Object> raw) {
        Object release = raw.get("release");
        Object sequence = release instanceof Map ? Json.obj(release).get("sequence") : null;
        return Json.isInteger(sequence) ? Json.lng(sequence) : null;
    }

    // ------------------------------------------------------------------------------ steps 3-4
    /** Steps 3 and 4: strict UTF-8 JSON object nested at most 32 levels, schema_version the integer 1. */
    public static Map<String, Object> parseManifest(byte[] data, String where) {
        Object value;
        try {
            value = Json.parse(data, MAX_DEPTH);
        } catch (Json.ParseException exc) {
            if (exc.tooDeep) {
                throw new BundleException(BundleException.JSON, where + " nests deeper than " + MAX_DEPTH
                        + " levels; not an mmedge manifest", exc);
            }
            if (exc.getMessage().startsWith("not valid UTF-8")) {
                throw new BundleException(BundleException.JSON, where + " is not valid UTF-8; the bundle is corrupt: export it again",
                        exc);
            }
            throw new BundleException(BundleException.JSON, where + " is not valid JSON (" + shortText(exc.getMessage(), 120)
                    + "); the bundle is corrupt: export it again", exc);
        }
        if (!(value instanceof Map)) throw new BundleException(BundleException.JSON, where + " must hold a JSON object");
        Map<String, Object> m = Json.obj(value);
        Object version = m.get("schema_version");
        if (!(version instanceof Long) || (Long) version != SCHEMA_VERSION) {
            String shown = version == null ? "none" : version instanceof String ? "'" + version + "'" : String.valueOf(version);
            throw new BundleException(BundleException.SCHEMA_VERSION, where + " has schema_version " + shortText(shown, 40) + "; this runtime reads version "
                    + SCHEMA_VERSION + " (an integer). Re-export the model with a matching mmedge, or update the app");
        }
        return m;
    }

    // ------------------------------------------------------------------------------ step 6
    /** What a schema cannot say: the manifest's parts agree, so that a bundle that loads can predict. */
    public static List<String> consistencyProblems(Manifest m) {
        List<String> problems = new ArrayList<>();
        List<Double> ratios = m.ratios();
        if (new HashSet<>(ratios).size() != ratios.size()) problems.add("keep_ratios repeat a ratio: " + ratios);
        int nExits = m.exitLayers.size();
        for (int i = 1; i < nExits; i++) {
            if (m.exitLayers.get(i) <= m.exitLayers.get(i - 1)) {
                problems.add("exit_layers " + m.exitLayers + " must increase strictly");
                break;
            }
        }
        for (Manifest.KeepRatio group : m.keepRatios) {
            String where = "keep_ratios[" + group.keepRatio + "]";
            if (group.stages.size() != nExits) {
                problems.add(where + " has " + group.stages.size() + " stages for " + nExits + " exit layers");
            }
            if (group.exitFlops.size() != group.stages.size()) {
                problems.add(where + ": " + group.exitFlops.size() + " exit_flops for " + group.stages.size() + " stages");
            }
            for (int i = 0; i < group.stages.size(); i++) {
                String name = group.stages.get(i);
                Manifest.Stage entry = m.stages.get(name);
                if (entry == null) {
                    problems.add(where + " names stage " + repr(name) + ", which `stages` does not describe");
                    continue;
                }
                if (entry.stage != i || entry.keepRatio != group.keepRatio) {
                    problems.add("stage " + repr(name) + " is stage " + entry.stage + " of keep ratio " + entry.keepRatio
                            + ", listed as stage " + i + " of " + group.keepRatio);
                }
                problems.addAll(ioProblems(name, entry, i, group, m));
            }
        }
        Set<String> listed = new TreeSet<>();
        for (Manifest.KeepRatio g : m.keepRatios) listed.addAll(g.stages);
        if (!ratios.contains(m.thresholds.keepRatio)) {
            problems.add("thresholds.keep_ratio " + m.thresholds.keepRatio + " is not an exported keep ratio " + ratios);
        }
        if (m.padId == m.unkId) problems.add("tokenizer pad_id and unk_id are the same id");
        problems.addAll(tokenizerKindProblems(m));
        problems.addAll(fixedRulesProblems(m));
        problems.addAll(adaptedProblems(m));
        for (Manifest.Artifact a : m.artifacts) {
            List<String> missing = new ArrayList<>();
            for (String name : listed) if (!a.stages.containsKey(name)) missing.add(name);
            if (!missing.isEmpty()) problems.add("artifact " + a.kind() + " lacks stages " + listing(missing));
            if (Arrays.asList("onnx", "ort", "pte", "mlpackage").contains(a.format) && a.runtime.equals("torch")) {
                problems.add("artifact " + a.target + "/" + a.format + " cannot run on the torch runtime");
            }
        }
        return problems.size() > 50 ? problems.subList(0, 50) : problems;
    }

    /**
     * tokenizer.kind and its WordPiece settings, by the schema's rules (which the schema check has
     * already applied to a loaded manifest; repeated here for a Manifest built from another tree).
     */
    static List<String> tokenizerKindProblems(Manifest m) {
        List<String> out = new ArrayList<>();
        Map<String, Object> tok = Json.obj(m.raw().get("tokenizer"));
        if (!WordTokenizer.KIND_WORD.equals(m.tokenizerKind) && !WordTokenizer.KIND_WORDPIECE.equals(m.tokenizerKind)
                && !WordTokenizer.KIND_BERT_WORDPIECE.equals(m.tokenizerKind)) {
            out.add("tokenizer.kind " + shortText(Json.write(tok.get("kind")), 40)
                    + " is not \"word\", \"wordpiece\" or \"bert-wordpiece\"");
            return out;
        }
        if (WordTokenizer.KIND_WORD.equals(m.tokenizerKind)) return out;
        Object prefix = tok.get("continuing_subword_prefix");
        int chars = prefix instanceof String ? ((String) prefix).codePointCount(0, ((String) prefix).length()) : 0;
        if (chars < 1 || chars > 16) {
            out.add("tokenizer kind wordpiece needs continuing_subword_prefix, a string of 1 to 16 characters (got "
                    + shortText(Json.write(prefix), 40) + ")");
        }
        Object longest = tok.get("max_input_chars_per_word");
        if (!Json.isInteger(longest) || Json.num(longest) < 1 || Json.num(longest) > 1024) {
            out.add("tokenizer kind wordpiece needs max_input_chars_per_word, an integer from 1 to 1024 (got "
                    + shortText(Json.write(longest), 40) + ")");
        }
        return out;
    }

    /**
     * Format version 1 fixes the preprocessing and tokenizer rules; other values are refused, not
     * ignored. An adapted encoder's preparation states its own: resize "pillow-bicubic" its scale,
     * mean and std (and no pad_color), tokenizer.kind "bert-wordpiece" its normaliser's flags (and no
     * split_regex).
     */
    static List<String> fixedRulesProblems(Manifest m) {
        List<String> out = new ArrayList<>();
        Map<String, Object> pre = Json.obj(m.raw().get("preprocessing"));
        Map<String, Object> tok = Json.obj(m.raw().get("tokenizer"));
        List<Object> half = Arrays.<Object>asList(0.5, 0.5, 0.5);
        if (!Preprocessor.ADAPTED_RESIZE.equals(m.resize)) {
            fixed(out, "preprocessing.scale", pre.get("scale"), 1.0 / 255);
            fixed(out, "preprocessing.mean", pre.get("mean"), half);
            fixed(out, "preprocessing.std", pre.get("std"), half);
            fixed(out, "preprocessing.pad_color", pre.get("pad_color"), Arrays.<Object>asList(118L, 118L, 124L));
        }
        if (!WordTokenizer.KIND_BERT_WORDPIECE.equals(m.tokenizerKind)) {
            fixed(out, "tokenizer.lowercase", tok.get("lowercase"), Boolean.TRUE);
            fixed(out, "tokenizer.split_regex", tok.get("split_regex"), WordTokenizer.SPLIT_REGEX);
        }
        return out;
    }

    /**
     * Two images per query are an adapted encoder's preparation only, without modality_pruning or
     * in_graph sections; head "match-score" is a yes/no match: task "match", labels ["no", "yes"]
     * (docs/bundle-format.md, "Two images, and a match score"; mmedge.bundle.manifest._adapted_problems).
     */
    static List<String> adaptedProblems(Manifest m) {
        List<String> out = new ArrayList<>();
        if (m.numImages != 1 && !Preprocessor.ADAPTED_RESIZE.equals(m.resize)) {
            out.add("preprocessing.num_images " + m.numImages + " needs resize '" + Preprocessor.ADAPTED_RESIZE
                    + "' (an adapted encoder's preparation)");
        }
        if (m.numImages != 1 && (m.raw().containsKey("modality_pruning") || m.raw().containsKey("in_graph"))) {
            out.add("a bundle of two images per query has no modality_pruning or in_graph section");
        }
        if (Manifest.MATCH_SCORE.equals(m.head) && (!Manifest.MATCH_TASK.equals(m.task) || !Manifest.MATCH_LABELS.equals(m.labels))) {
            out.add("head '" + Manifest.MATCH_SCORE + "' needs task 'match' and labels " + Manifest.MATCH_LABELS
                    + " (logits [0, s]), not task " + repr(String.valueOf(m.task)) + " and labels "
                    + shortText(String.valueOf(m.labels), 60));
        }
        return out;
    }

    private static void fixed(List<String> out, String name, Object got, Object want) {
        if (!Json.equal(got, want)) {
            out.add(name + " is " + shortText(Json.write(got), 60) + "; format version 1 fixes it at " + Json.write(want));
        }
    }

    private static List<String> names(List<Manifest.TensorSpec> specs) {
        List<String> out = new ArrayList<>();
        for (Manifest.TensorSpec t : specs) out.add(t.name);
        return out;
    }

    private static String dims(long[] shape) {
        return Arrays.toString(shape);
    }

    /** Stage 0's pixel_values shape: [1, 3, S, S], or [1, I, 3, S, S] for I = preprocessing.num_images above 1. */
    static long[] pixelShape(Manifest m) {
        long s = m.imageSize;
        return m.numImages == 1 ? new long[] {1, 3, s, s} : new long[] {1, m.numImages, 3, s, s};
    }

    /** A stage's declared inputs and outputs are what the runtime feeds and reads. */
    static List<String> ioProblems(String name, Manifest.Stage entry, int index, Manifest.KeepRatio group, Manifest m) {
        List<String> out = new ArrayList<>();
        List<String> wantIn = index == 0 ? STAGE0_INPUTS : LATER_INPUTS;
        List<String> wantOut = index == 0 ? STAGE0_OUTPUTS : LATER_OUTPUTS;
        if (!names(entry.inputs).equals(wantIn)) out.add("stage " + repr(name) + " inputs must be " + wantIn + " in that order");
        if (!names(entry.outputs).containsAll(wantOut)) {
            out.add("stage " + repr(name) + " outputs must include " + wantOut);
            return out;
        }
        long[] logits = entry.output("logits").shape;
        if (logits.length == 0 || logits[logits.length - 1] != m.labels.size()) {
            out.add("stage " + repr(name) + " gives " + (logits.length == 0 ? 0 : logits[logits.length - 1])
                    + " logits for " + m.labels.size() + " labels");
        }
        if (index == 0) {
            Manifest.TensorSpec pixels = entry.input("pixel_values");
            long[] want = pixelShape(m);
            if (pixels != null && !Arrays.equals(pixels.shape, want)) {
                out.add("stage " + repr(name) + " takes pixel_values " + dims(pixels.shape) + ", preprocessing gives "
                        + dims(want));
            }
            Manifest.TensorSpec ids = entry.input("input_ids");
            if (ids != null && !Arrays.equals(ids.shape, new long[] {1, m.maxLength})) {
                out.add("stage " + repr(name) + " takes input_ids " + dims(ids.shape) + ", the tokenizer gives [1, "
                        + m.maxLength + "]");
            }
            long[] kept = entry.output("kept_index").shape;
            if (kept.length == 0 || kept[kept.length - 1] != group.keptTokens) {
                out.add("stage " + repr(name) + " keeps " + dims(kept) + " tokens, keep_ratios says " + group.keptTokens);
            }
        }
        return out;
    }

    // ------------------------------------------------------------------------------ steps 7 and 8
    /** Why `rel` is not an acceptable bundle member name (null when it is). */
    public static String memberProblem(String rel) {
        if (rel == null) return "path is null, not a string";
        int length = rel.codePointCount(0, rel.length());
        if (length == 0 || length > MAX_PATH_CHARS) return "path of " + length + " characters (1 to " + MAX_PATH_CHARS + " allowed)";
        if (rel.indexOf('\\') >= 0 || rel.indexOf('\0') >= 0) {
            return "path " + repr(rel) + " has a backslash or NUL byte; use '/'-separated relative paths";
        }
        if (rel.startsWith("/")) return "path " + repr(rel) + " is absolute; bundle paths are relative to the bundle";
        for (String part : rel.split("/", -1)) {
            if (part.isEmpty() || part.equals(".") || part.equals("..")) {
                return "path " + repr(rel) + " is not normalised (empty, '.' or '..' part); it must stay inside the bundle";
            }
        }
        return null;
    }

    /** Every path the manifest names, with where it is named. */
    public static Map<String, String> namedPaths(Manifest m) {
        Map<String, String> named = new LinkedHashMap<>();
        named.put(m.tokenizerFile, "tokenizer.file");
        for (Manifest.Artifact a : m.artifacts) {
            if (a.file != null) named.put(a.file, "artifact " + a.kind());
            if (a.externalData != null) named.put(a.externalData, "artifact " + a.kind() + " external_data");
            for (Map.Entry<String, Manifest.ArtifactStage> e : a.stages.entrySet()) {
                if (e.getValue().file != null) named.put(e.getValue().file, "artifact " + a.kind() + " stage " + e.getKey());
            }
        }
        for (Map.Entry<String, Map<String, Object>> e : m.inGraph.entrySet()) {
            named.put((String) e.getValue().get("file"), "in_graph " + e.getKey());
            for (String prefix : new String[] {"", "int8_"}) {  // the fp32 graph's files, then the int8 graph's
                String what = "in_graph " + e.getKey() + (prefix.isEmpty() ? "" : " int8");
                if (!prefix.isEmpty() && e.getValue().get("int8_file") instanceof String) {
                    named.put((String) e.getValue().get("int8_file"), what);
                }
                if (e.getValue().get(prefix + "ort_file") instanceof String) {
                    named.put((String) e.getValue().get(prefix + "ort_file"), what + " (ORT format)");
                }
                if (e.getValue().get(prefix + "external_data") instanceof String) {
                    named.put((String) e.getValue().get(prefix + "external_data"), what + " external_data");
                }
            }
        }
        return named;
    }

    /** Steps 7 (paths) and 8 (nothing unlisted). */
    static void checkPaths(Path root, Manifest m) {
        checkPaths(root, m.files, namedPaths(m));
    }

    /** Steps 7 and 8 for any kind of bundle: its listed `files` and the paths its manifest names (path -> where). */
    static void checkPaths(Path root, Map<String, Manifest.FileEntry> files, Map<String, String> named) {
        List<String> bad = new ArrayList<>();
        for (String rel : files.keySet()) {
            String p = memberProblem(rel);
            if (p != null) bad.add(shortText(rel, 80) + ": " + p);
        }
        if (!bad.isEmpty()) {
            throw new BundleException(BundleException.PATH, "files lists unsafe paths: " + listing(bad) + "; export the bundle again");
        }
        if (files.containsKey(MANIFEST_FILE) || files.containsKey(SIGNATURE_FILE)) {
            throw new BundleException(BundleException.PATH, "files may not list " + MANIFEST_FILE + " or " + SIGNATURE_FILE);
        }
        for (Map.Entry<String, String> e : named.entrySet()) {
            String rel = e.getKey();
            String where = e.getValue();
            String problem = memberProblem(rel);
            if (problem != null) throw new BundleException(BundleException.PATH, where + ": " + problem, null, rel, null);
            if (files.containsKey(rel)) continue;
            String prefix = rel + "/";
            boolean inside = false;
            for (String f : files.keySet()) inside |= f.startsWith(prefix);
            if (!inside) {
                throw new BundleException(BundleException.UNLISTED, where + " names " + repr(rel)
                        + ", which `files` does not list with a hash; export it again", null, rel, null);
            }
            BasicFileAttributes info = lstatChain(root, rel);
            if (!info.isDirectory()) {
                throw new BundleException(BundleException.FILE_NOT_REGULAR, rel
                        + " is not a directory; a bundle holds regular files and directories only",
                        null, rel, BundleException.Reason.NOT_REGULAR);
            }
            List<String> unlisted = new ArrayList<>();
            walk(root, rel, files.keySet(), unlisted);
            if (!unlisted.isEmpty()) {
                Collections.sort(unlisted);
                throw new BundleException(BundleException.UNLISTED, rel + " holds files the manifest does not list: "
                        + listing(unlisted) + "; export it again", null, rel, null);
            }
        }
        checkUnlisted(root, files.keySet());
    }

    /**
     * Step 8 of the spec, the bundle as a whole: every entry inside the bundle directory is
     * manifest.json or manifest.sig (regular files), a listed file or a directory on the way to one. Anything else (a file, a
     * symbolic link, a FIFO, an empty folder) is refused as unlisted, so that a valid signature
     * covers everything a bundle holds. Entries are lstat-ed only (no link followed, nothing opened);
     * a listed path that is a link or not a regular file is left to step 8.
     */
    static void checkUnlisted(Path root, Set<String> listed) {
        Set<String> parents = new HashSet<>();
        for (String f : listed) {
            for (int i = f.lastIndexOf('/'); i > 0; i = f.lastIndexOf('/', i - 1)) {
                if (!parents.add(f.substring(0, i))) break;
            }
        }
        List<String> unlisted = new ArrayList<>();
        String first = null;
        ArrayDeque<String> todo = new ArrayDeque<>();
        todo.push("");
        while (!todo.isEmpty() && unlisted.size() <= MAX_LISTED) {
            String dir = todo.pop();
            try (DirectoryStream<Path> entries = Files.newDirectoryStream(dir.isEmpty() ? root : root.resolve(dir))) {
                for (Path child : entries) {
                    if (unlisted.size() > MAX_LISTED) break;
                    String name = child.getFileName().toString();
                    String rel = dir.isEmpty() ? name : dir + "/" + name;
                    BasicFileAttributes info = Files.readAttributes(child, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
                    if (dir.isEmpty() && (name.equals(MANIFEST_FILE) || name.equals(SIGNATURE_FILE))) {
                        if (info.isRegularFile()) continue; // manifest.sig that is a folder, link or FIFO: unlisted
                    } else if (listed.contains(rel)) {
                        continue;
                    } else if (parents.contains(rel)) {
                        if (info.isDirectory() && !info.isSymbolicLink()) todo.push(rel);
                        continue; // a link or file in a listed file's way: step 9 refuses it
                    }
                    if (first == null || rel.compareTo(first) < 0) first = rel;
                    unlisted.add(rel + (info.isSymbolicLink() ? " (a symbolic link)" : info.isDirectory() ? "/ (a folder)"
                            : info.isRegularFile() ? "" : " (not a regular file)"));
                }
            } catch (IOException exc) {
                throw new BundleException(BundleException.FILE_NOT_REGULAR, "cannot list " + (dir.isEmpty() ? "the bundle" : dir)
                        + " (" + exc.getMessage() + ")", exc, dir.isEmpty() ? null : dir, BundleException.Reason.UNREADABLE);
            }
        }
        if (!unlisted.isEmpty()) {
            Collections.sort(unlisted);
            throw new BundleException(BundleException.UNLISTED, "the bundle holds what its manifest does not list: "
                    + listing(unlisted) + "; a bundle holds its listed files only (remove the others, or export it again)",
                    null, first, null);
        }
    }

    private static void walk(Path root, String rel, Set<String> listed, List<String> unlisted) {
        try (DirectoryStream<Path> dir = Files.newDirectoryStream(root.resolve(rel))) {
            for (Path child : dir) {
                String member = rel + "/" + child.getFileName().toString();
                BasicFileAttributes info = Files.readAttributes(child, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
                if (info.isSymbolicLink()) {
                    if (listed.contains(member)) continue; // step 9 refuses it as not a regular file
                    unlisted.add(member + " (a symbolic link)");
                } else if (info.isDirectory()) {
                    if (listed.contains(member)) continue; // step 9 refuses it as not a regular file
                    walk(root, member, listed, unlisted);
                } else if (!listed.contains(member)) {
                    unlisted.add(member);
                }
            }
        } catch (IOException exc) {
            throw new BundleException(BundleException.FILE_NOT_REGULAR, "cannot list " + rel + " in the bundle ("
                    + exc.getMessage() + ")", exc, rel, BundleException.Reason.UNREADABLE);
        }
    }

    // ------------------------------------------------------------------------------ step 9
    /** lstat every component of root/rel: BundleException on a missing part or a symbolic link. */
    static BasicFileAttributes lstatChain(Path root, String rel) {
        Path path = root;
        BasicFileAttributes info = null;
        for (String part : rel.split("/")) {
            if (info != null && !info.isDirectory()) {
                throw new BundleException(BundleException.FILE_NOT_REGULAR, rel + ": " + root.relativize(path)
                        + " is not a directory; a bundle holds regular files and directories only", null, rel,
                        BundleException.Reason.NOT_REGULAR);
            }
            path = path.resolve(part);
            try {
                info = Files.readAttributes(path, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
            } catch (NoSuchFileException exc) {
                throw new BundleException(BundleException.FILE_MISSING, rel + " is missing from the bundle; export it again", exc,
                        rel, BundleException.Reason.MISSING);
            } catch (IOException exc) {
                throw new BundleException(BundleException.FILE_NOT_REGULAR, "cannot inspect " + rel + " in the bundle ("
                        + exc.getMessage() + ")", exc, rel, BundleException.Reason.UNREADABLE);
            }
            if (info.isSymbolicLink()) {
                throw new BundleException(BundleException.FILE_NOT_REGULAR, rel + " passes through a symbolic link (" + part
                        + "); a bundle may not contain links: copy the real files in and export it again", null, rel,
                        BundleException.Reason.LINK);
            }
        }
        return info;
    }

    private static final Set<OpenOption> READ_NOFOLLOW =
            new HashSet<OpenOption>(Arrays.asList(StandardOpenOption.READ, LinkOption.NOFOLLOW_LINKS));

    /** A regular member file's bytes, at most `limit` (TOO_LARGE beyond). */
    static byte[] readMember(Path root, String rel, long limit) {
        BasicFileAttributes info = lstatChain(root, rel);
        if (!info.isRegularFile()) {
            throw new BundleException(BundleException.FILE_NOT_REGULAR, rel + " is not a regular file", null, rel,
                    BundleException.Reason.NOT_REGULAR);
        }
        try (SeekableByteChannel ch = Files.newByteChannel(root.resolve(rel), READ_NOFOLLOW)) {
            long size = ch.size();
            if (size > limit) {
                throw new BundleException(BundleException.SIZE_MISMATCH, rel + " is over " + limit
                        + " bytes; not an mmedge bundle file", null, rel, BundleException.Reason.TOO_LARGE);
            }
            ByteBuffer buf = ByteBuffer.allocate((int) size + 1);
            while (buf.hasRemaining() && ch.read(buf) > 0) {
                // read until the end, or one byte past the size the file had when opened
            }
            if (buf.position() > limit) {
                throw new BundleException(BundleException.SIZE_MISMATCH, rel + " is over " + limit
                        + " bytes; not an mmedge bundle file", null, rel, BundleException.Reason.TOO_LARGE);
            }
            return Arrays.copyOf(buf.array(), buf.position());
        } catch (IOException exc) {
            throw new BundleException(BundleException.FILE_NOT_REGULAR, "cannot open " + rel + " (" + exc.getMessage()
                    + "); it must be a regular file", exc, rel, BundleException.Reason.UNREADABLE);
        }
    }

    /** Outcome of hashing one member. */
    private static final class Hashed {
        final String sha256;
        final byte[] bytes;

        Hashed(String sha256, byte[] bytes) {
            this.sha256 = sha256;
            this.bytes = bytes;
        }
    }

    /** SHA-256 of a regular member of `expected` bytes (null when the size differs); the bytes too when `keep`. */
    private static Hashed hashMember(Path root, String rel, long expected, boolean keep) {
        BasicFileAttributes info = lstatChain(root, rel);
        if (!info.isRegularFile()) {
            throw new BundleException(BundleException.FILE_NOT_REGULAR, rel + " is not a regular file", null, rel,
                    BundleException.Reason.NOT_REGULAR);
        }
        try (SeekableByteChannel ch = Files.newByteChannel(root.resolve(rel), READ_NOFOLLOW)) {
            if (ch.size() != expected) return null;
            if (keep && expected > Integer.MAX_VALUE - 16) {
                throw new BundleException(BundleException.SIZE_MISMATCH, rel + " is too large to keep in memory", null, rel,
                        BundleException.Reason.TOO_LARGE);
            }
            MessageDigest digest = sha256();
            byte[] kept = keep ? new byte[(int) expected] : null;
            ByteBuffer buf = ByteBuffer.allocate(1 << 20);
            long total = 0;
            int n;
            while ((n = ch.read(buf)) > 0) {
                if (total + n > expected) return null; // grew while being read
                digest.update(buf.array(), 0, n);
                if (kept != null) System.arraycopy(buf.array(), 0, kept, (int) total, n);
                total += n;
                buf.clear();
            }
            if (total != expected) return null;
            return new Hashed(IO.hex(digest.digest()), kept);
        } catch (IOException exc) {
            throw new BundleException(BundleException.FILE_NOT_REGULAR, "cannot open " + rel + " (" + exc.getMessage()
                    + "); it must be a regular file", exc, rel, BundleException.Reason.UNREADABLE);
        }
    }

    static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException exc) {
            throw new IllegalStateException("SHA-256 is not available", exc);
        }
    }

    private static BundleException filesRefused(Path root, List<String> missing, List<String> odd, List<String> sized,
                                                List<String> changed) {
        List<String> parts = new ArrayList<>();
        if (!missing.isEmpty()) parts.add("missing: " + listing(missing));
        if (!odd.isEmpty()) parts.add("not regular files inside the bundle (links, FIFOs, devices, directories): " + listing(odd));
        if (!sized.isEmpty()) parts.add("size mismatch (tampered, truncated or corrupt): " + listing(sized));
        if (!changed.isEmpty()) parts.add("hash mismatch (tampered or corrupt): " + listing(changed));
        String code;
        String first;
        BundleException.Reason reason = null;
        if (!missing.isEmpty()) {
            code = BundleException.FILE_MISSING;
            first = missing.get(0);
            reason = BundleException.Reason.MISSING;
        } else if (!odd.isEmpty()) {
            code = BundleException.FILE_NOT_REGULAR;
            first = odd.get(0);
            reason = BundleException.Reason.NOT_REGULAR;
        } else if (!sized.isEmpty()) {
            code = BundleException.SIZE_MISMATCH;
            first = sized.get(0);
        } else {
            code = BundleException.HASH_MISMATCH;
            first = changed.get(0);
        }
        return new BundleException(code, "bundle " + root + " failed verification; " + String.join("; ", parts)
                + ". Export it again", null, first, reason);
    }

    /**
     * Step 9 of the spec: every listed file, in the manifest's order: first each one's type and size
     * (lstat, nothing opened), then, when all are right, each one's SHA-256. Returns the verified
     * bytes of the files in `keep`. The refusal's code is that of the first kind of problem in this
     * order: file-missing, file-not-regular, size-mismatch, hash-mismatch (the message lists them all).
     */
    static Map<String, byte[]> verifyFiles(Path root, Manifest m, Set<String> keep) {
        return verifyFiles(root, m.files, m.tokenizerFile, keep);
    }

    /** Step 9 for any kind of bundle: its listed `files`, of which `tokenizerFile` is bounded in size. */
    static Map<String, byte[]> verifyFiles(Path root, Map<String, Manifest.FileEntry> listed, String tokenizerFile,
                                           Set<String> keep) {
        List<String> missing = new ArrayList<>();
        List<String> odd = new ArrayList<>();
        List<String> sized = new ArrayList<>();
        List<String> changed = new ArrayList<>();
        for (Map.Entry<String, Manifest.FileEntry> e : listed.entrySet()) {
            String rel = e.getKey();
            BasicFileAttributes info;
            try {
                info = lstatChain(root, rel);
            } catch (BundleException exc) {
                if (exc.reason() == BundleException.Reason.MISSING) missing.add(rel);
                else odd.add(rel);
                continue;
            }
            if (!info.isRegularFile()) odd.add(rel);
            else if (info.size() != e.getValue().bytes) sized.add(rel);
        }
        if (!missing.isEmpty() || !odd.isEmpty() || !sized.isEmpty()) throw filesRefused(root, missing, odd, sized, changed);
        Manifest.FileEntry tokenizer = listed.get(tokenizerFile);
        if (tokenizer != null && tokenizer.bytes > MAX_TOKENIZER_BYTES) {
            throw new BundleException(BundleException.TOKENIZER, "the tokenizer file is over " + (MAX_TOKENIZER_BYTES >> 20)
                    + " MB", null, tokenizerFile, BundleException.Reason.TOO_LARGE);
        }
        Map<String, byte[]> kept = new LinkedHashMap<>();
        for (Map.Entry<String, Manifest.FileEntry> e : listed.entrySet()) {
            String rel = e.getKey();
            Hashed h;
            try {
                h = hashMember(root, rel, e.getValue().bytes, keep.contains(rel));
            } catch (BundleException exc) { // changed since the first pass
                if (exc.reason() == BundleException.Reason.MISSING) missing.add(rel);
                else if (exc.reason() == BundleException.Reason.TOO_LARGE) sized.add(rel);
                else odd.add(rel);
                continue;
            }
            if (h == null) {
                sized.add(rel);
                continue;
            }
            if (!h.sha256.equals(e.getValue().sha256)) {
                changed.add(rel);
                continue;
            }
            if (h.bytes != null) kept.put(rel, h.bytes);
        }
        if (!missing.isEmpty() || !odd.isEmpty() || !sized.isEmpty() || !changed.isEmpty()) {
            throw filesRefused(root, missing, odd, sized, changed);
        }
        return kept;
    }

    // ------------------------------------------------------------------------------ step 10
    /**
     * A BERT tokenizer's settings (what its tokenizer.json gives) against the manifest's tokenizer
     * section: each must be equal (the first five that differ are named), as the Python runtime asks.
     */
    static List<String> bertProblems(BertWordPieceTokenizer tokenizer, Manifest m) {
        List<String> out = new ArrayList<>();
        Map<String, Object> fields = tokenizer.manifestFields();
        for (String k : new TreeSet<>(fields.keySet())) {
            Object stated = m.tokenizerSpec.get(k);
            if (out.size() < 5 && !Json.equal(fields.get(k), stated)) {
                out.add("tokenizer.json gives " + k + " " + shortText(Json.write(fields.get(k)), 60) + ", the manifest "
                        + (stated == null ? "none" : shortText(Json.write(stated), 60)));
            }
        }
        return out;
    }

    /** Step 10: the tokenizer file agrees with the manifest and gives ids the model's embedding has. */
    static void checkTokenizer(WordTokenizer tokenizer, Manifest m) {
        List<String> problems = new ArrayList<>();
        if (tokenizer instanceof BertWordPieceTokenizer || WordTokenizer.KIND_BERT_WORDPIECE.equals(m.tokenizerKind)) {
            if (!(tokenizer instanceof BertWordPieceTokenizer) || !WordTokenizer.KIND_BERT_WORDPIECE.equals(m.tokenizerKind)) {
                problems.add("tokenizer.json is a " + tokenizer.kind() + " tokenizer, the manifest's tokenizer.kind is "
                        + repr(m.tokenizerKind));
            } else {
                problems.addAll(bertProblems((BertWordPieceTokenizer) tokenizer, m));
            }
            Object rows = m.modelConfig.get("vocab_size");
            if (Json.isInteger(rows) && tokenizer.maxId() >= Json.lng(rows)) {
                problems.add("token ids reach " + tokenizer.maxId() + ", the model embeds " + Json.lng(rows));
            }
            if (!problems.isEmpty()) {
                throw new BundleException(BundleException.TOKENIZER, "the bundle's tokenizer does not fit its manifest: "
                        + String.join("; ", problems) + "; export the bundle again");
            }
            return;
        }
        problems.addAll(wordTokenizerProblems(tokenizer, m.tokenizerKind, m.continuingSubwordPrefix, m.maxInputCharsPerWord,
                m.maxLength, m.padId, m.unkId, m.modelConfig.get("vocab_size")));
        if (!problems.isEmpty()) {
            throw new BundleException(BundleException.TOKENIZER, "the bundle's tokenizer does not fit its manifest: "
                    + String.join("; ", problems) + "; export the bundle again");
        }
    }

    /**
     * Step 10 for a word-level or WordPiece tokenizer file (classifier and captioning bundles): its
     * kind and WordPiece settings, truncation, [PAD] / [UNK] ids are the manifest's and every id is
     * below the model's vocab_size (when the manifest states one).
     */
    static List<String> wordTokenizerProblems(WordTokenizer tokenizer, String kind, String prefix, int maxChars, int maxLength,
                                              int padId, int unkId, Object vocabSize) {
        List<String> problems = new ArrayList<>();
        if (!tokenizer.kind().equals(kind)) {
            problems.add("tokenizer.json has a " + (tokenizer instanceof WordPieceTokenizer ? "WordPiece" : "WordLevel")
                    + " model (kind " + repr(tokenizer.kind()) + ") but the manifest's tokenizer.kind is " + repr(kind));
        } else if (WordTokenizer.KIND_WORDPIECE.equals(kind)) {
            if (!tokenizer.continuingSubwordPrefix().equals(prefix)) {
                problems.add("continuing_subword_prefix " + repr(tokenizer.continuingSubwordPrefix()) + " vs the manifest's "
                        + (prefix == null ? "(none)" : repr(prefix)));
            }
            if (tokenizer.maxInputCharsPerWord() != maxChars) {
                problems.add("max_input_chars_per_word " + tokenizer.maxInputCharsPerWord() + " vs the manifest's " + maxChars);
            }
        }
        if (tokenizer.maxLength() != maxLength) {
            problems.add("max_length " + tokenizer.maxLength() + " vs the manifest's " + maxLength);
        }
        Integer pad = tokenizer.id(WordTokenizer.PAD);
        Integer unk = tokenizer.id(WordTokenizer.UNK);
        if (pad == null || unk == null || pad != padId || unk != unkId) {
            problems.add("[PAD]/[UNK] ids differ from the manifest's pad_id/unk_id");
        }
        if (Json.isInteger(vocabSize) && tokenizer.maxId() >= Json.lng(vocabSize)) {
            problems.add("token id " + tokenizer.maxId() + " is outside the model's " + Json.lng(vocabSize) + "-word embedding");
        }
        return problems;
    }

    // ------------------------------------------------------------------------------ rollback
    /**
     * Rollback protection: when the app gives a minimum sequence or an expected name, the manifest's
     * {@code release} section (covered by the signature, since it is inside manifest.json) must be
     * there, name that bundle and carry a sequence at least that minimum. An app stores the highest
     * sequence it has accepted and passes it as the minimum next time.
     */
    static void checkRelease(Map<String, Object> raw, Options o) {
        if (o.minSequence == null && o.expectName == null) return;
        Object release = raw.get("release");
        if (!(release instanceof Map)) {
            throw new BundleException(BundleException.ROLLBACK, "the manifest has no release section (name, sequence), but the "
                    + "app asks for " + (o.expectName != null ? "release name " + repr(o.expectName) : "")
                    + (o.expectName != null && o.minSequence != null ? " and " : "")
                    + (o.minSequence != null ? "a release sequence of at least " + o.minSequence : "")
                    + ": an older bundle, or one made for another app; export it again with a current mmedge");
        }
        Object name = Json.obj(release).get("name");
        Object sequence = Json.obj(release).get("sequence");
        if (o.expectName != null && !o.expectName.equals(name)) {
            throw new BundleException(BundleException.ROLLBACK, "the bundle is release "
                    + (name instanceof String ? repr((String) name) : "(no name)") + ", the app expects " + repr(o.expectName)
                    + ": another model's bundle was put in its place");
        }
        if (o.minSequence != null && (!Json.isInteger(sequence) || Json.lng(sequence) < o.minSequence)) {
            throw new BundleException(BundleException.ROLLBACK, "the bundle's release sequence "
                    + (Json.isInteger(sequence) ? String.valueOf(Json.lng(sequence)) : "(none)")
                    + " is below the app's minimum " + o.minSequence + ": an older release (a downgrade) is refused");
        }
    }

    // ------------------------------------------------------------------------------ all steps
    /** What the app asks of a bundle besides the spec's checks. */
    public static final class Options {
        /** PEM SubjectPublicKeyInfo of the Ed25519 key the bundle must be signed with (null: no signature check). */
        public byte[] verifyKeyPem;
        /** The lowest release.sequence accepted (null: none); the app stores the highest it has accepted. */
        public Long minSequence;
        /** The release.name the bundle must have (null: any). */
        public String expectName;

        /** Problems with these options (empty when they are fine). */
        public List<String> problems() {
            List<String> out = new ArrayList<>();
            if (minSequence != null && (minSequence < 0 || minSequence > Json.MAX_SAFE_INTEGER)) {
                out.add("minimum release sequence " + minSequence + " must be an integer from 0 to 2^53 - 1");
            }
            if (expectName != null && expectName.isEmpty()) out.add("the expected release name must not be empty");
            return out;
        }
    }

    /** Every check of the spec (steps 1 and 3 to 9), in order, without a signature or release check. */
    public static Loaded load(Path root, Selector selector) {
        return load(root, new Options(), selector);
    }

    /** The manifest's checked bytes and parsed tree after steps 1 to 4 (its kind not yet looked at). */
    static final class Read {
        final byte[] bytes;
        final Map<String, Object> raw;
        /** The manifest's path, for messages. */
        final String where;

        Read(byte[] bytes, Map<String, Object> raw, String where) {
            this.bytes = bytes;
            this.raw = raw;
            this.where = where;
        }
    }

    /**
     * Steps 1 to 4, shared by classifier and captioning bundles: the options, manifest.json as a
     * regular file of at most 8 MiB, its signature when a key is given, strict JSON, schema_version 1.
     */
    static Read readManifest(Path root, Options o) {
        List<String> bad = o.problems();
        if (!bad.isEmpty()) throw new ConfigException(bad, "arguments");
        if (root == null) throw new BundleException(BundleException.MANIFEST_MISSING, "a bundle path is needed");
        if (!Files.isDirectory(root)) {
            throw new BundleException(BundleException.MANIFEST_MISSING, "bundle " + root
                    + " does not exist or is not a directory; create one with `mmedge export`");
        }
        // step 1
        Path manifestPath = root.resolve(MANIFEST_FILE);
        if (!Files.exists(manifestPath, LinkOption.NOFOLLOW_LINKS)) {
            throw new BundleException(BundleException.MANIFEST_MISSING, root + " has no " + MANIFEST_FILE
                    + ": not an mmedge bundle, or an interrupted copy; export it again", null, MANIFEST_FILE,
                    BundleException.Reason.MISSING);
        }
        String where = root.resolve(MANIFEST_FILE).toString();
        byte[] bytes;
        try {
            bytes = readMember(root, MANIFEST_FILE, MAX_MANIFEST_BYTES);
        } catch (BundleException exc) {
            if (exc.reason() == BundleException.Reason.TOO_LARGE) {
                throw new BundleException(BundleException.MANIFEST_TOO_LARGE, MANIFEST_FILE + " is over " + MAX_MANIFEST_BYTES
                        + " bytes; not an mmedge bundle file", exc, MANIFEST_FILE, BundleException.Reason.TOO_LARGE);
            }
            if (exc.reason() == BundleException.Reason.MISSING) throw exc.withCode(BundleException.MANIFEST_MISSING);
            throw new BundleException(BundleException.MANIFEST_NOT_REGULAR, MANIFEST_FILE + " is not a regular file ("
                    + exc.getMessage() + "); a link, FIFO, device or directory is refused", exc, MANIFEST_FILE, exc.reason());
        }
        // step 2
        if (o.verifyKeyPem != null) Signatures.verify(root, bytes, o.verifyKeyPem);
        // steps 3 and 4
        return new Read(bytes, parseManifest(bytes, where), where);
    }

    /**
     * Which loader a bundle needs: its manifest's kind ("caption" for {@link CaptionLoader} /
     * CaptionEngine, "vlm" for {@link VLMLoader} / VLMEngine), or null for a classifier bundle ({@link #load} / Engine), read after steps 1, 3
     * and 4 (a kind that is not a string is given as its JSON text). It trusts nothing: the loader
     * then makes every check, the signature included. BundleException as the loader would refuse.
     */
    public static String kind(Path root) {
        Object kind = readManifest(root, new Options()).raw.get("kind");
        return kind == null ? null : kind instanceof String ? (String) kind : Json.write(kind);
    }

    /** Every check of the spec (steps 1 to 9), in order, with the signature and release checks `options` ask for. */
    public static Loaded load(Path root, Options options, Selector selector) {
        Options o = options == null ? new Options() : options;
        Read read = readManifest(root, o);
        byte[] bytes = read.bytes;
        Map<String, Object> raw = read.raw;
        String where = read.where;
        if (raw.containsKey("kind")) { // a classifier bundle has no kind; "caption", "vlm" and any other kind are not loaded here
            Object kind = raw.get("kind");
            throw new BundleException(BundleException.UNSUPPORTED, where + (kind.equals("caption")
                    ? " is a captioning bundle (kind \"caption\"); Engine loads classifier bundles: load it with "
                    + "CaptionEngine.load"
                    : kind.equals("vlm")
                    ? " is a generative VLM bundle (kind \"vlm\"); Engine loads classifier bundles: load it with VLMEngine.load"
                    : " is a bundle of kind " + shortText(Json.write(kind), 40) + ", which this runtime does not implement "
                    + "(it reads classifier bundles, which have no kind, captioning bundles, kind \"caption\", and generative "
                    + "VLM bundles, kind \"vlm\"); update the app"));
        }
        // step 5
        checkSchema(schema(), raw, where, "manifest schema");
        // step 6
        Manifest manifest = new Manifest(raw);
        checkConsistent(consistencyProblems(manifest), where);
        checkRelease(raw, o);
        // steps 7 and 8
        checkPaths(root, manifest);
        // step 9
        Set<String> keep = new HashSet<>();
        if (selector != null) keep.addAll(selector.select(manifest));
        keep.add(manifest.tokenizerFile);
        Map<String, byte[]> files = verifyFiles(root, manifest, keep);
        // step 10
        byte[] tokenizerBytes = tokenizerBytes(files, manifest.tokenizerFile);
        WordTokenizer tokenizer;
        try {
            tokenizer = WordTokenizer.KIND_BERT_WORDPIECE.equals(manifest.tokenizerKind)
                    ? BertWordPieceTokenizer.fromBertJson(tokenizerBytes, manifest.maxLength)
                    : WordTokenizer.fromJson(tokenizerBytes, manifest.lowercase);
        } catch (BundleException exc) {
            throw tokenizerRefusal(exc);
        }
        checkTokenizer(tokenizer, manifest);
        return new Loaded(root, manifest, bytes, tokenizer, files);
    }

    /** At most `max` problems, one a line, each cut to 200 characters. */
    static String join(List<String> problems, int max) {
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < Math.min(max, problems.size()); i++) {
            if (i > 0) out.append("\n  ");
            out.append(shortText(problems.get(i), 200));
        }
        return out.toString();
    }
}
