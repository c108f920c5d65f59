package dev.mmedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.mmedge.core.testing.BundleCopy;
import dev.mmedge.core.testing.Golden;
import dev.mmedge.core.testing.NegativeVectors;
import dev.mmedge.core.testing.ReplayStageRunner;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyPairGenerator;
import java.util.Arrays;
import java.util.Base64;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import java.util.function.UnaryOperator;
import org.junit.After;
import org.junit.Before;
import org.junit.Test;

/**
 * The refusals added for docs/bundle-format.md's reason codes, each with its code: anything unlisted
 * inside a bundle, rollback (release name and sequence), signatures through Engine.load, captioning
 * bundles, the self-check on values (NaN, infinity) and shapes, and ONNX external data.
 */
public class RefusalCodesTest {
    private BundleCopy copy;
    private Path tmp;
    private Path dir;
    private String original;

    @Before
    public void copy() throws IOException {
        copy = BundleCopy.of(Golden.bundle(), "mmedge-codes-");
        tmp = copy.tmp;
        dir = copy.dir;
        original = copy.original;
    }

    @After
    public void remove() throws IOException {
        copy.close();
    }

    private static ReplayStageRunner.Factory factory() {
        return new ReplayStageRunner.Factory(Golden.queries(), false);
    }

    private Engine load(Engine.Options o) {
        return Engine.load(dir, factory(), o);
    }

    private BundleException refused(String code, StageRunner.Factory f, Engine.Options o) {
        return BundleCopy.refused(code, () -> Engine.load(dir, f, o).close());
    }

    private BundleException refused(String code, Engine.Options o) {
        ReplayStageRunner.Factory f = factory();
        BundleException exc = refused(code, f, o);
        if (!code.equals(BundleException.SELF_CHECK)) assertEquals("no stage was opened", null, f.last);
        return exc;
    }

    private BundleException refused(String code) {
        return refused(code, new Engine.Options());
    }

    private void edit(Consumer<Map<String, Object>> change) throws Exception {
        copy.edit(change);
    }

    private void mkfifo(Path path) throws Exception {
        assertEquals(0, new ProcessBuilder("mkfifo", path.toString()).inheritIO().start().waitFor());
    }

    // ------------------------------------------------------------------ unlisted
    @Test
    public void unlistedFilesLinksFoldersAndFifosAreRefused() throws Exception {
        load(new Engine.Options()).close();
        Path[] extras = {dir.resolve("extra.txt"), dir.resolve("onnx/fp32/extra.onnx"), dir.resolve(".hidden"),
            dir.resolve("onnx/new/deeper/x.bin")};
        for (Path extra : extras) {
            Files.createDirectories(extra.getParent());
            Files.write(extra, new byte[] {1, 2, 3});
            BundleException exc = refused(BundleException.UNLISTED);
            // an unlisted folder is reported as a whole
            String first = extra.toString().contains("onnx/new") ? "onnx/new" : dir.relativize(extra).toString();
            assertEquals(first, exc.path());
            assertTrue(exc.getMessage(), exc.getMessage().contains(first));
            NegativeVectors.removeTree(extra);
            if (extra.toString().contains("onnx/new")) NegativeVectors.removeTree(dir.resolve("onnx/new"));
            load(new Engine.Options()).close();
        }
        Files.createSymbolicLink(dir.resolve("extra-link"), dir.resolve("tokenizer.json"));
        assertTrue(refused(BundleException.UNLISTED).getMessage().contains("extra-link (a symbolic link)"));
        Files.delete(dir.resolve("extra-link"));
        Files.createSymbolicLink(dir.resolve("onnx/dangling"), tmp.resolve("nonexistent"));
        refused(BundleException.UNLISTED);
        Files.delete(dir.resolve("onnx/dangling"));
        Files.createDirectory(dir.resolve("empty"));
        assertTrue(refused(BundleException.UNLISTED).getMessage().contains("empty/ (a folder)"));
        Files.delete(dir.resolve("empty"));
        mkfifo(dir.resolve("extra.fifo"));
        assertTrue(refused(BundleException.UNLISTED).getMessage().contains("extra.fifo (not a regular file)"));
        Files.delete(dir.resolve("extra.fifo"));
        // manifest.sig is not listed and needs no key to be there
        Files.write(dir.resolve("manifest.sig"), "{}".getBytes(StandardCharsets.UTF_8));
        load(new Engine.Options()).close();
        // many unlisted files: the walk stops early, the message stays short
        for (int i = 0; i < 100; i++) Files.write(dir.resolve("junk" + i), new byte[0]);
        assertTrue(refused(BundleException.UNLISTED).getMessage().contains("more)"));
    }

    @Test
    public void aNamedPathThatIsNotListedIsUnlisted() throws Exception {
        Files.copy(dir.resolve("tokenizer.json"), dir.resolve("other.json"));
        edit(m -> Json.obj(m.get("tokenizer")).put("file", "other.json"));
        refused(BundleException.UNLISTED);
    }

    @Test
    public void anInGraphEntrysInt8FilesAreNamedPaths() throws Exception {
        for (String field : new String[] {"int8_file", "int8_ort_file", "int8_external_data"}) {
            copy.close();
            copy();
            edit(m -> {
                Map<String, Object> entries = Json.obj(Json.obj(m.get("in_graph")).get("by_keep_ratio"));
                Json.obj(entries.values().iterator().next()).put(field, "onnx/int8/missing.onnx");
            });
            BundleException exc = refused(BundleException.UNLISTED);
            String message = exc.getMessage();
            assertTrue(message, message.contains("int8") && message.contains("missing.onnx"));
        }
    }

    @Test
    public void listedPathsThatAreNotRegularFiles() throws Exception {
        // a listed file that is a directory, or a folder on its way that is a file
        String stage = "onnx/fp32/k36_stage3.onnx";
        Files.delete(dir.resolve(stage));
        Files.createDirectory(dir.resolve(stage));
        assertEquals(stage, refused(BundleException.FILE_NOT_REGULAR).path());
        NegativeVectors.removeTree(dir.resolve("onnx"));
        Files.write(dir.resolve("onnx"), new byte[] {1});
        refused(BundleException.FILE_NOT_REGULAR);
    }

    @Test
    public void manifestThatIsNotARegularFile() throws Exception {
        Files.delete(dir.resolve("manifest.json"));
        Files.createSymbolicLink(dir.resolve("manifest.json"), dir.resolve("tokenizer.json"));
        refused(BundleException.MANIFEST_NOT_REGULAR);
        Files.delete(dir.resolve("manifest.json"));
        Files.createSymbolicLink(dir.resolve("manifest.json"), tmp.resolve("nonexistent"));
        refused(BundleException.MANIFEST_NOT_REGULAR);
        Files.delete(dir.resolve("manifest.json"));
        Files.createDirectory(dir.resolve("manifest.json"));
        refused(BundleException.MANIFEST_NOT_REGULAR);
        Files.delete(dir.resolve("manifest.json"));
        mkfifo(dir.resolve("manifest.json"));
        refused(BundleException.MANIFEST_NOT_REGULAR);
        Files.delete(dir.resolve("manifest.json"));
        refused(BundleException.MANIFEST_MISSING);
        try {
            Engine.load(tmp.resolve("no-such-bundle"), factory(), new Engine.Options());
            fail();
        } catch (BundleException exc) {
            assertEquals(BundleException.MANIFEST_MISSING, exc.code());
        }
    }

    // ------------------------------------------------------------------ JSON edge cases
    @Test
    public void jsonEdgeCasesInTheManifestAreRefusedWithCodeJson() throws Exception {
        assertTrue(original.contains("\"schema_version\": 1,"));
        String[] values = {"1e400", "-1e400", "9007199254740992", "-9007199254740993", "\"\\ud800\"", "\"\\udc00\\ud800\"",
            "NaN", "Infinity"};
        for (String v : values) {
            Files.write(dir.resolve("manifest.json"), original.replace("\"schema_version\": 1,",
                    "\"schema_version\": 1, \"probe\": " + v + ",").getBytes(StandardCharsets.UTF_8));
            refused(BundleException.JSON);
        }
        Files.write(dir.resolve("manifest.json"), original.replace("\"schema_version\": 1,",
                "\"schema_version\": 1, \"name\": \"other\",").getBytes(StandardCharsets.UTF_8));
        assertTrue(refused(BundleException.JSON).getMessage().contains("duplicate key 'name'"));
        byte[] bytes = original.getBytes(StandardCharsets.UTF_8);
        byte[] bom = new byte[bytes.length + 3];
        bom[0] = (byte) 0xef;
        bom[1] = (byte) 0xbb;
        bom[2] = (byte) 0xbf;
        System.arraycopy(bytes, 0, bom, 3, bytes.length);
        Files.write(dir.resolve("manifest.json"), bom);
        assertTrue(refused(BundleException.JSON).getMessage().contains("byte-order mark"));
        // the largest integers and a surrogate pair are fine
        Files.write(dir.resolve("manifest.json"), original.replace("\"schema_version\": 1,",
                "\"schema_version\": 1, \"probe\": [9007199254740991, -9007199254740991, \"\\ud83d\\ude00\"],")
                .getBytes(StandardCharsets.UTF_8));
        load(new Engine.Options()).close();
    }

    /** tokenizer.json with the JSON edge cases: refused with code tokenizer (its files entry updated). */
    @Test
    public void jsonEdgeCasesInTheTokenizerAreRefused() throws Exception {
        String tok = new String(Files.readAllBytes(dir.resolve("tokenizer.json")), StandardCharsets.UTF_8);
        int brace = tok.indexOf('{');
        String[] edits = {"\ufeff" + tok, tok.substring(0, brace + 1) + "\"version\": 1, \"version\": 2," + tok.substring(brace + 1),
            tok.substring(0, brace + 1) + "\"probe\": 1e400," + tok.substring(brace + 1)};
        for (String text : edits) {
            byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
            Files.write(dir.resolve("tokenizer.json"), bytes);
            edit(m -> {
                Map<String, Object> entry = Json.obj(Json.obj(m.get("files")).get("tokenizer.json"));
                entry.put("sha256", IO.sha256Hex(bytes));
                entry.put("bytes", (long) bytes.length);
            });
            refused(BundleException.TOKENIZER);
        }
    }

    // ------------------------------------------------------------------ signatures
    private Map<String, Object> signatureVector() {
        return Golden.json(Golden.golden().resolve("signature.json"));
    }

    private Engine.Options withKey(byte[] pem) {
        Engine.Options o = new Engine.Options();
        o.verifyKey = pem;
        return o;
    }

    @Test
    public void signaturesThroughEngineLoad() throws Exception {
        Map<String, Object> vector = signatureVector();
        byte[] pem = ((String) vector.get("public_key_pem")).getBytes(StandardCharsets.US_ASCII);
        refused(BundleException.SIGNATURE_MISSING, withKey(pem));
        Files.write(dir.resolve("manifest.sig"), Json.write(vector.get("manifest_sig")).getBytes(StandardCharsets.UTF_8));
        load(withKey(pem)).close();
        load(new Engine.Options()).close();
        // signature first: a signed bundle whose manifest changed is refused for the signature
        byte[] manifest = Files.readAllBytes(dir.resolve("manifest.json"));
        byte[] changed = manifest.clone();
        changed[changed.length - 3] = (byte) ' ';
        Files.write(dir.resolve("manifest.json"), changed);
        refused(BundleException.SIGNATURE_INVALID, withKey(pem));
        Files.write(dir.resolve("manifest.json"), manifest);
        byte[] der = KeyPairGenerator.getInstance("Ed25519").generateKeyPair().getPublic().getEncoded();
        String other = "-----BEGIN PUBLIC KEY-----\n" + Base64.getEncoder().encodeToString(der) + "\n-----END PUBLIC KEY-----\n";
        refused(BundleException.SIGNATURE_KEY, withKey(other.getBytes(StandardCharsets.US_ASCII)));
        refused(BundleException.SIGNATURE_KEY, withKey("not a key".getBytes(StandardCharsets.US_ASCII)));
        String[] malformed = {"{\"format\": \"other\"}", "[]", "not json", "\ufeff" + Json.write(vector.get("manifest_sig"))};
        for (String text : malformed) {
            Files.write(dir.resolve("manifest.sig"), text.getBytes(StandardCharsets.UTF_8));
            refused(BundleException.SIGNATURE_MALFORMED, withKey(pem));
        }
        Map<String, Object> sig = new LinkedHashMap<>(Json.obj(vector.get("manifest_sig")));
        sig.put("signature", "!!!");
        Files.write(dir.resolve("manifest.sig"), Json.write(sig).getBytes(StandardCharsets.UTF_8));
        refused(BundleException.SIGNATURE_MALFORMED, withKey(pem));
        Files.delete(dir.resolve("manifest.sig"));
        Files.createDirectory(dir.resolve("manifest.sig"));
        refused(BundleException.SIGNATURE_MALFORMED, withKey(pem));
        Files.delete(dir.resolve("manifest.sig"));
        mkfifo(dir.resolve("manifest.sig"));
        refused(BundleException.SIGNATURE_MALFORMED, withKey(pem));
        Files.delete(dir.resolve("manifest.sig"));
        char[] big = new char[Signatures.MAX_SIGNATURE_BYTES + 1];
        Arrays.fill(big, ' ');
        Files.write(dir.resolve("manifest.sig"), (Json.write(vector.get("manifest_sig")) + new String(big))
                .getBytes(StandardCharsets.UTF_8));
        refused(BundleException.SIGNATURE_MALFORMED, withKey(pem));
    }

    // ------------------------------------------------------------------ rollback
    private void release(Object name, Object sequence) throws Exception {
        edit(m -> {
            Map<String, Object> r = new LinkedHashMap<>();
            if (name != null) r.put("name", name);
            if (sequence != null) r.put("sequence", sequence);
            m.put("release", r);
        });
    }

    private static Engine.Options rollbackOptions(Long min, String name) {
        Engine.Options o = new Engine.Options();
        o.minSequence = min;
        o.expectName = name;
        return o;
    }

    @Test
    public void rollbackIsRefused() throws Exception {
        // no release section: fine unless the app asks for one
        load(new Engine.Options()).close();
        refused(BundleException.ROLLBACK, rollbackOptions(0L, null));
        refused(BundleException.ROLLBACK, rollbackOptions(null, "vqa-default"));
        release("vqa-default", 1733390000000L);
        try (Engine e = load(rollbackOptions(1733390000000L, "vqa-default"))) {
            assertEquals(Long.valueOf(1733390000000L), e.releaseSequence());
            assertEquals("vqa-default", e.releaseName());
        }
        load(rollbackOptions(0L, null)).close();
        load(new Engine.Options()).close();
        assertTrue(refused(BundleException.ROLLBACK, rollbackOptions(1733390000001L, null)).getMessage()
                .contains("below the app's minimum 1733390000001"));
        assertTrue(refused(BundleException.ROLLBACK, rollbackOptions(null, "other-model")).getMessage()
                .contains("'other-model'"));
        refused(BundleException.ROLLBACK, rollbackOptions(0L, "VQA-default"));
        // options the app got wrong are a ConfigException, not a refusal of the bundle
        for (Engine.Options o : Arrays.asList(rollbackOptions(-1L, null), rollbackOptions(1L << 53, null),
                rollbackOptions(null, ""))) {
            try {
                load(o).close();
                fail();
            } catch (ConfigException expected) {
                assertTrue(expected.getMessage(), expected.getMessage().contains("release"));
            }
        }
    }

    // ------------------------------------------------------------------ captioning bundles
    @Test
    public void captioningBundlesAreUnsupported() throws Exception {
        edit(m -> m.put("kind", "caption"));
        refused(BundleException.UNSUPPORTED);
        Files.write(dir.resolve("manifest.json"),
                "{\"schema_version\": 1, \"kind\": \"caption\", \"name\": \"c\"}".getBytes(StandardCharsets.UTF_8));
        assertTrue(refused(BundleException.UNSUPPORTED).getMessage().contains("captioning"));
        edit(m -> m.put("kind", "detector"));
        assertTrue(refused(BundleException.UNSUPPORTED).getMessage().contains("kind \"detector\""));
        // schema_version is still checked first
        Files.write(dir.resolve("manifest.json"), "{\"schema_version\": 2, \"kind\": \"caption\"}".getBytes(StandardCharsets.UTF_8));
        refused(BundleException.SCHEMA_VERSION);
    }

    @Test
    public void noArtifactForThisRuntimeIsUnsupported() throws Exception {
        Engine.Options o = new Engine.Options();
        o.precision = "int8";
        refused(BundleException.UNSUPPORTED, o);
    }

    // ------------------------------------------------------------------ self-check
    /** A factory whose stage outputs pass through `change` (a backend giving wrong values or shapes). */
    private static StageRunner.Factory changing(StageRunner.Factory inner, UnaryOperator<Map<String, Tensor>> change) {
        return new StageRunner.Factory() {
            @Override
            public String runtime() {
                return inner.runtime();
            }

            @Override
            public String[] formats() {
                return inner.formats();
            }

            @Override
            public boolean opensBytes() {
                return inner.opensBytes();
            }

            @Override
            public StageRunner open(BundleLoader.Loaded bundle, Manifest.Artifact artifact, List<String> stages, int threads)
                    throws Exception {
                StageRunner runner = inner.open(bundle, artifact, stages, threads);
                return new StageRunner() {
                    @Override
                    public String backend() {
                        return runner.backend();
                    }

                    @Override
                    public Map<String, Tensor> run(String stage, Map<String, Tensor> inputs) throws Exception {
                        return change.apply(runner.run(stage, inputs));
                    }

                    @Override
                    public void close() {
                        runner.close();
                    }
                };
            }
        };
    }

    private static UnaryOperator<Map<String, Tensor>> replace(String name, float value) {
        return out -> {
            Map<String, Tensor> copy = new LinkedHashMap<>(out);
            Tensor t = out.get(name);
            float[] v = t.floats().clone();
            v[v.length - 1] = value;
            copy.put(name, Tensor.float32(v, t.shape()));
            return copy;
        };
    }

    @Test
    public void selfCheckRefusesNonFiniteValuesAndWrongShapes() throws Exception {
        Map<String, Object> golden = Golden.queries();
        // every float output NaN: a bundle whose weights are NaN
        BundleException exc = refused(BundleException.SELF_CHECK, new ReplayStageRunner.Factory(golden, false, true),
                new Engine.Options());
        assertTrue(exc.getMessage(), exc.getMessage().contains("NaN"));
        for (String output : new String[] {"logits", "confidence", "hidden"}) {
            for (float bad : new float[] {Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY}) {
                refused(BundleException.SELF_CHECK, changing(factory(), replace(output, bad)), new Engine.Options());
            }
        }
        refused(BundleException.SELF_CHECK, changing(factory(), out -> {
            Map<String, Tensor> copy = new LinkedHashMap<>(out);
            copy.put("logits", Tensor.float32(new float[out.get("logits").size() + 1], 1, out.get("logits").size() + 1));
            return copy;
        }), new Engine.Options());
        refused(BundleException.SELF_CHECK, changing(factory(), out -> {
            Map<String, Tensor> copy = new LinkedHashMap<>(out);
            copy.put("confidence", Tensor.int32(new int[] {1}, 1));
            return copy;
        }), new Engine.Options());
        refused(BundleException.SELF_CHECK, changing(factory(), out -> {
            Map<String, Tensor> copy = new LinkedHashMap<>(out);
            copy.remove("confidence");
            return copy;
        }), new Engine.Options());
        // without the self-check the same bundle loads (the app chose not to check)
        Engine.Options o = new Engine.Options();
        o.selfCheck = false;
        Engine.load(dir, new ReplayStageRunner.Factory(golden, false, true), o).close();
    }

    // ------------------------------------------------------------------ ONNX external data
    private static void varint(ByteArrayOutputStream out, long v) {
        while ((v & ~0x7fL) != 0) {
            out.write((int) ((v & 0x7f) | 0x80));
            v >>>= 7;
        }
        out.write((int) v);
    }

    private static byte[] field(int number, byte[] body) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        varint(out, ((long) number << 3) | 2);
        varint(out, body.length);
        out.write(body, 0, body.length);
        return out.toByteArray();
    }

    private static byte[] concat(byte[]... parts) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        for (byte[] p : parts) out.write(p, 0, p.length);
        return out.toByteArray();
    }

    /** ModelProto bytes whose graph has one initializer stored in `location` (external data). */
    private static byte[] modelReading(String location) {
        byte[] entry = concat(field(1, "location".getBytes(StandardCharsets.UTF_8)),
                field(2, location.getBytes(StandardCharsets.UTF_8)));
        byte[] tensor = concat(field(8, "w".getBytes(StandardCharsets.UTF_8)), field(13, entry), new byte[] {(byte) (14 << 3), 1});
        return field(7, field(5, tensor)); // ModelProto.graph { GraphProto.initializer { ... } }
    }

    @Test
    public void onnxExternalDataLocations() throws Exception {
        byte[] stage = Files.readAllBytes(dir.resolve("onnx/fp32/k36_stage1.onnx"));
        assertEquals(Collections.singletonList("weights.bin"), OnnxExternalData.locations(stage));
        assertEquals(Collections.singletonList("../x.bin"), OnnxExternalData.locations(modelReading("../x.bin")));
        // in a subgraph (an If branch): ModelProto.graph.node.attribute.g.initializer
        byte[] tensor = concat(field(13, concat(field(1, "location".getBytes(StandardCharsets.UTF_8)),
                field(2, "/etc/hostname".getBytes(StandardCharsets.UTF_8)))));
        byte[] nested = field(7, field(1, field(5, field(6, field(5, tensor)))));
        assertEquals(Collections.singletonList("/etc/hostname"), OnnxExternalData.locations(nested));
        for (byte[] bad : new byte[][] {{(byte) 0x3a, 5, 1}, {(byte) 0x3f}, {(byte) 0xff, (byte) 0xff, (byte) 0xff}}) {
            try {
                OnnxExternalData.locations(bad);
                fail("accepted " + Arrays.toString(bad));
            } catch (OnnxExternalData.FormatException expected) {
                // refused
            }
        }
    }

    /** A stage graph (its files entry updated) that also reads `location`. */
    private void stageAlsoReading(String location) throws Exception {
        String rel = "onnx/fp32/k36_stage1.onnx";
        byte[] bytes = concat(Files.readAllBytes(Golden.bundle().resolve(rel)), modelReading(location)); // protobuf merges the graphs
        Files.write(dir.resolve(rel), bytes);
        edit(m -> {
            Map<String, Object> entry = Json.obj(Json.obj(m.get("files")).get(rel));
            entry.put("sha256", IO.sha256Hex(bytes));
            entry.put("bytes", (long) bytes.length);
        });
    }

    @Test
    public void aGraphReadingAnotherWeightsFileIsUnlisted() throws Exception {
        stageAlsoReading("weights.bin");
        load(new Engine.Options()).close();
        stageAlsoReading("k36_stage2.onnx");
        assertEquals("onnx/fp32/k36_stage1.onnx", refused(BundleException.UNLISTED).path());
        stageAlsoReading("../../../outside.bin");
        refused(BundleException.UNLISTED);
        stageAlsoReading("/etc/hostname");
        refused(BundleException.UNLISTED);
        Files.copy(Golden.bundle().resolve("onnx/fp32/k36_stage1.onnx"), dir.resolve("onnx/fp32/k36_stage1.onnx"),
                java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        // external_data in another folder than its graphs
        Files.createDirectories(dir.resolve("w"));
        Files.move(dir.resolve("onnx/fp32/weights.bin"), dir.resolve("w/weights.bin"));
        edit(m -> {
            Map<String, Object> files = Json.obj(m.get("files"));
            files.put("w/weights.bin", files.remove("onnx/fp32/weights.bin"));
            Json.obj(Json.arr(m.get("artifacts")).get(0)).put("external_data", "w/weights.bin");
            Object ig = m.get("in_graph");
            if (ig instanceof Map) {
                for (Object e : Json.obj(Json.obj(ig).get("by_keep_ratio")).values()) {
                    if (Json.obj(e).containsKey("external_data")) Json.obj(e).put("external_data", "w/weights.bin");
                }
            }
        });
        refused(BundleException.INCONSISTENT, factory(), new Engine.Options());
    }

    /** The manifest's preprocessing switched to an adapted encoder's (stretch, bicubic, no pad_color) for `images` images. */
    private static void adaptedPreparation(Map<String, Object> m, long images) {
        Map<String, Object> pre = Json.obj(m.get("preprocessing"));
        pre.put("resize", "pillow-bicubic");
        pre.put("fit", "stretch");
        pre.put("num_images", images);
        pre.remove("pad_color");
    }

    /**
     * Two images per query (an adapted NLVR2 model, preprocessing.num_images 2) and head "match-score"
     * (an adapted retrieval model) are implemented, so they are checked for consistency (step 6,
     * inconsistent) like the rest of the manifest: two images only with the adapted preparation, a
     * stage 0 taking [1, 2, 3, S, S] and no modality_pruning or in_graph section; match-score only
     * with task "match" and labels ["no", "yes"]. Values no runtime reads are the schema's, and an
     * explicit head "softmax" or num_images 1 loads. Here on the shipped one-image VQA bundle; the
     * NLVR2 and retrieval bundles' own edits are in AdaptedVectorsTest.
     */
    @Test
    public void twoImagesAndMatchScoreAreCheckedForConsistency() throws Exception {
        // a one-image bundle stating two images: format 1's preparation, and its stage 0 takes one image
        edit(m -> Json.obj(m.get("preprocessing")).put("num_images", 2L));
        String message = refused(BundleException.INCONSISTENT).getMessage();
        assertTrue(message, message.contains("preprocessing.num_images 2 needs resize 'pillow-bicubic'"));
        assertTrue(message, message.contains("preprocessing gives [1, 2, 3, 96, 96]"));
        // with the adapted preparation, only the stage-0 shape is wrong
        edit(m -> {
            adaptedPreparation(m, 2);
            m.put("task", "verify");
        });
        message = refused(BundleException.INCONSISTENT).getMessage();
        assertTrue(message, message.contains("takes pixel_values [1, 3, 96, 96], preprocessing gives [1, 2, 3, 96, 96]"));
        assertTrue(message, !message.contains("needs resize"));
        // match-score on a six-label VQA bundle, and with task match and labels [no, yes] over six logits
        edit(m -> m.put("head", "match-score"));
        message = refused(BundleException.INCONSISTENT).getMessage();
        assertTrue(message, message.contains("head 'match-score' needs task 'match' and labels [no, yes]"));
        edit(m -> {
            m.put("head", "match-score");
            m.put("task", "match");
            m.put("labels", Arrays.<Object>asList("no", "yes"));
        });
        message = refused(BundleException.INCONSISTENT).getMessage();
        assertTrue(message, message.contains("logits for 2 labels") && !message.contains("needs task"));
        edit(m -> Json.obj(m.get("preprocessing")).put("num_images", 3L));
        refused(BundleException.SCHEMA);
        edit(m -> m.put("head", "sigmoid"));
        refused(BundleException.SCHEMA);
        edit(m -> m.put("head", "softmax"));
        try (Engine e = load(new Engine.Options())) {
            assertEquals(Manifest.SOFTMAX, e.head);
            assertEquals(1, e.numImages);
        }
        edit(m -> Json.obj(m.get("preprocessing")).put("num_images", 1L));
        load(new Engine.Options()).close();
    }

    /**
     * An adapted encoder's preparation (AdaptedVectorsTest runs it) on the shipped format-1 bundle:
     * its manifest switched to resize "pillow-bicubic" loads and stretches; without the fields that
     * preparation needs it is refused (schema), and with tokenizer.kind "bert-wordpiece" over its
     * WordLevel tokenizer.json it is refused (tokenizer), never run by the format-1 rules.
     */
    @Test
    public void adaptedEncoderRulesAreCheckedNotRefusedAsUnsupported() throws Exception {
        edit(m -> Json.obj(m.get("preprocessing")).put("resize", "pillow-bicubic"));
        assertTrue(refused(BundleException.SCHEMA).getMessage().contains("fit"));
        edit(m -> adaptedPreparation(m, 1));
        try (Engine engine = Engine.load(dir, new ReplayStageRunner.Factory(Golden.queries(), false), new Engine.Options())) {
            assertTrue(engine.preprocessor.stretches());
            int[] argb = new int[90 * 40];
            for (int i = 0; i < argb.length; i++) argb[i] = 0xff000000 | (int) ((i * 2654435761L >>> 7) & 0xffffff);
            Preprocessor.Result got = engine.preprocessor.run(argb, 90, 40);
            Manifest m = engine.manifest;
            Preprocessor.Result want = Preprocessor.stretched(m.imageSize, m.mean, m.std, m.scale).run(argb, 90, 40);
            assertTrue(Arrays.equals(want.pixelValues, got.pixelValues));
            Preprocessor.Result padded = new Preprocessor(m.imageSize, m.padColor, m.mean, m.std, m.scale).run(argb, 90, 40);
            assertTrue("stretched, not padded", !Arrays.equals(padded.resizedRgb, got.resizedRgb));
        }
        edit(m -> {
            Map<String, Object> tok = Json.obj(m.get("tokenizer"));
            tok.put("kind", "bert-wordpiece");
            for (String k : new String[] {"strip_accents", "clean_text", "handle_chinese_chars"}) tok.put(k, Boolean.TRUE);
            tok.put("continuing_subword_prefix", "##");
            tok.put("max_input_chars_per_word", 100L);
            tok.put("template", Arrays.<Object>asList("[CLS]", "$text", "[SEP]"));
            tok.put("special_tokens", Collections.emptyList());
            tok.put("cls_id", 2L);
            tok.put("sep_id", 3L);
            tok.remove("split_regex");
        });
        assertTrue(refused(BundleException.TOKENIZER).getMessage().contains("BERT WordPiece"));
    }
}
