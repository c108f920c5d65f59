package dev.mmedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.mmedge.core.testing.BundleCopy;
import dev.mmedge.core.testing.CaptionVectors;
import dev.mmedge.core.testing.Golden;
import dev.mmedge.core.testing.ReplayCaptionRunner;
import dev.mmedge.core.testing.ReplayStageRunner;
import dev.mmedge.core.testing.ReplayVLMRunner;
import dev.mmedge.core.testing.VLMVectors;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import org.junit.After;
import org.junit.Before;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * A generative VLM bundle is loaded with every check of "Loading a bundle", with the same reason
 * codes (docs/bundle-format.md "Generative VLM bundles", "What a runtime checks"), each refusal
 * before any graph is opened; the other engines refuse it and it refuses theirs (unsupported); a
 * tokenizer.json with components this runtime does not implement is refused (unsupported); bad
 * arguments are a ConfigException listing every problem. Each case edits a fresh copy of
 * tests/vectors/vlm/tiny-smolvlm-onnx.mmedge.
 */
public class VLMRefusalTest {
    private static Map<String, Object> replay;
    private BundleCopy copy;
    private Path dir;

    @BeforeClass
    public static void read() {
        replay = VLMVectors.replay();
    }

    @Before
    public void copy() throws IOException {
        copy = BundleCopy.of(VLMVectors.bundle(), "mmedge-vlm-codes-");
        dir = copy.dir;
    }

    @After
    public void remove() throws IOException {
        copy.close();
    }

    private BundleException refused(String code, VLMEngine.Options o) {
        ReplayVLMRunner.Factory f = new ReplayVLMRunner.Factory(replay, false, false);
        BundleException exc = BundleCopy.refused(code, () -> VLMEngine.load(dir, f, o).close());
        assertNull("no graph was opened", f.last);
        return exc;
    }

    private BundleException refused(String code) {
        return refused(code, new VLMEngine.Options());
    }

    private void edit(Consumer<Map<String, Object>> change) throws Exception {
        copy.edit(change);
    }

    private static Map<String, Object> at(Map<String, Object> m, String... path) {
        Map<String, Object> node = m;
        for (String key : path) node = Json.obj(node.get(key));
        return node;
    }

    /** Rewrites the copy's tokenizer.json, changed by `change`, and lists its new size and hash in the manifest. */
    private void editTokenizer(Consumer<Map<String, Object>> change) throws Exception {
        Path file = dir.resolve("tokenizer.json");
        Map<String, Object> t = Json.obj(Json.parse(Files.readAllBytes(VLMVectors.bundle().resolve("tokenizer.json")), 64));
        change.accept(t);
        byte[] bytes = Json.write(t, 1).getBytes(StandardCharsets.UTF_8);
        writeListed(file, bytes);
    }

    private void writeListed(Path file, byte[] bytes) throws Exception {
        Files.write(file, bytes);
        edit(m -> {
            Map<String, Object> entry = at(m, "files", "tokenizer.json");
            entry.put("bytes", (long) bytes.length);
            entry.put("sha256", IO.sha256Hex(bytes));
        });
    }

    @Test
    public void theVlmSchemaOnTheClasspathIsTheRepositorys() throws Exception {
        byte[] repo = Files.readAllBytes(Golden.repo().resolve("mmedge/adapt/vlm_manifest.schema.json"));
        byte[] ours = IO.readAll(VLMLoader.class.getResourceAsStream(VLMLoader.SCHEMA_RESOURCE), 1 << 22);
        assertTrue("the build copies mmedge/adapt/vlm_manifest.schema.json", Arrays.equals(repo, ours));
        assertTrue(VLMLoader.schema().violations(Json.obj(Json.parse(copy.original, 64))).problems.isEmpty());
    }

    @Test
    public void theUntouchedCopyLoads() {
        try (VLMEngine e = VLMEngine.load(dir, new ReplayVLMRunner.Factory(replay), new VLMEngine.Options())) {
            assertEquals("replay", e.backend());
            assertEquals(3, e.numStages());
            assertEquals(Long.valueOf(1796603857399L), e.releaseSequence());
            assertEquals(0.5, e.keepRatio(), 0);
            assertEquals("copy", e.kv());
            assertEquals(new Policy("confidence", 0.510205, 2, 0.0), e.policy());
        }
    }

    @Test
    public void eachEngineRefusesTheOthersBundles() throws Exception {
        try {
            Engine.load(dir, new ReplayStageRunner.Factory(Golden.queries(), false), new Engine.Options());
            fail();
        } catch (BundleException exc) {
            assertEquals(BundleException.UNSUPPORTED, exc.code());
            assertTrue(exc.getMessage(), exc.getMessage().contains("VLMEngine.load"));
        }
        try {
            CaptionEngine.load(dir, new ReplayCaptionRunner.Factory(CaptionVectors.replay()), new CaptionEngine.Options());
            fail();
        } catch (BundleException exc) {
            assertEquals(BundleException.UNSUPPORTED, exc.code());
            assertTrue(exc.getMessage(), exc.getMessage().contains("VLMEngine.load"));
        }
        try {
            VLMEngine.load(Golden.bundle(), new ReplayVLMRunner.Factory(replay), new VLMEngine.Options());
            fail();
        } catch (BundleException exc) {
            assertEquals(BundleException.UNSUPPORTED, exc.code());
            assertTrue(exc.getMessage(), exc.getMessage().contains("Engine.load"));
        }
        assertEquals("vlm", BundleLoader.kind(dir));
    }

    @Test
    public void changedOrMissingFiles() throws Exception {
        Path weights = dir.resolve("onnx/fp32/weights.bin");
        byte[] data = Files.readAllBytes(weights);
        data[data.length / 2] ^= 1;
        Files.write(weights, data);
        assertEquals("onnx/fp32/weights.bin", refused(BundleException.HASH_MISMATCH).path());
        Files.write(weights, Arrays.copyOf(data, data.length - 1));
        refused(BundleException.SIZE_MISMATCH);
        Files.delete(weights);
        refused(BundleException.FILE_MISSING);
        Files.write(weights, Files.readAllBytes(VLMVectors.bundle().resolve("onnx/fp32/weights.bin")));
        Path graph = dir.resolve("ort/fp32/head.ort");
        byte[] head = Files.readAllBytes(graph);
        head[head.length - 1] ^= 1; // a file of the artifact the engine does not run is checked too
        Files.write(graph, head);
        assertEquals("ort/fp32/head.ort", refused(BundleException.HASH_MISMATCH).path());
        Files.write(graph, Files.readAllBytes(VLMVectors.bundle().resolve("ort/fp32/head.ort")));
        Files.write(dir.resolve("onnx/fp32/extra.onnx"), new byte[] {1});
        refused(BundleException.UNLISTED);
    }

    @Test
    public void theVlmSchema() throws Exception {
        edit(m -> at(m, "thresholds").put("kv", "sometimes"));
        refused(BundleException.SCHEMA);
        edit(m -> at(m, "preprocessing").put("image_size", 5000L)); // every number a runtime allocates from is bounded
        refused(BundleException.SCHEMA);
        edit(m -> at(m, "preprocessing").put("resample", "nearest"));
        refused(BundleException.SCHEMA);
        edit(m -> at(m, "thresholds").put("keep_ratio", 1.5));
        refused(BundleException.SCHEMA);
        edit(m -> at(m, "tokenizer").remove("caption_prompt"));
        refused(BundleException.SCHEMA);
        edit(m -> at(m, "layout").put("unknown", 1L)); // the layout has no other field
        refused(BundleException.SCHEMA);
        edit(m -> at(m, "tokenizer").put("file", "../tokenizer.json"));
        refused(BundleException.PATH);
    }

    /** thresholds.tasks as the schema's $defs/task_setting says: caption and/or answer, each with all four fields in bounds. */
    @Test
    public void theVlmSchemaOfTaskSettings() throws Exception {
        edit(m -> at(m, "thresholds").put("tasks", VLMTaskSettingsTest.tasks()));
        VLMEngine.load(dir, new ReplayVLMRunner.Factory(replay, false, false), new VLMEngine.Options()).close(); // well formed
        List<Consumer<Map<String, Object>>> malformed = Arrays.asList(
            tasks -> tasks.clear(),                                                 // minProperties 1
            tasks -> tasks.put("vqa", VLMTaskSettingsTest.setting("full", 1.0, 2L, 1.0)), // caption and answer only
            tasks -> Json.obj(tasks.get("caption")).remove("patience"),             // all four required
            tasks -> Json.obj(tasks.get("caption")).put("kv", "copy"),              // kv is not per task
            tasks -> Json.obj(tasks.get("answer")).put("policy", "latency_budget"),
            tasks -> Json.obj(tasks.get("answer")).put("threshold", 1.5),
            tasks -> Json.obj(tasks.get("answer")).put("patience", 0L),
            tasks -> Json.obj(tasks.get("answer")).put("patience", 2.5),
            tasks -> Json.obj(tasks.get("answer")).put("keep_ratio", 0.0),
            tasks -> tasks.put("caption", "max_probability"));
        for (Consumer<Map<String, Object>> change : malformed) {
            edit(m -> {
                Map<String, Object> tasks = VLMTaskSettingsTest.tasks();
                change.accept(tasks);
                at(m, "thresholds").put("tasks", tasks);
            });
            assertTrue(refused(BundleException.SCHEMA).getMessage().contains("thresholds/tasks"));
        }
        edit(m -> at(m, "thresholds").put("tasks", Arrays.<Object>asList(VLMTaskSettingsTest.tasks())));
        refused(BundleException.SCHEMA);
    }

    @Test
    public void theVlmConsistency() throws Exception {
        edit(m -> at(m, "thresholds").put("keep_ratio", 0.25)); // not one of the keep ratios
        assertTrue(refused(BundleException.INCONSISTENT).getMessage().contains("thresholds.keep_ratio"));
        edit(m -> { // nor may a task's be
            Map<String, Object> tasks = VLMTaskSettingsTest.tasks();
            Json.obj(tasks.get("answer")).put("keep_ratio", 0.25);
            at(m, "thresholds").put("tasks", tasks);
        });
        assertTrue(refused(BundleException.INCONSISTENT).getMessage().contains(
                "thresholds.tasks.answer.keep_ratio 0.25 is not one of the keep ratios [1.0, 0.5]"));
        edit(m -> at(m, "layout").put("stage_layers", Arrays.<Object>asList(Arrays.<Object>asList(0L), Arrays.<Object>asList(2L),
                Arrays.<Object>asList(1L))));
        refused(BundleException.INCONSISTENT);
        edit(m -> at(m, "layout").put("keep_ratios", Arrays.<Object>asList(1.0, 0.5, 0.5)));
        refused(BundleException.INCONSISTENT);
        edit(m -> at(m, "tokenizer").put("max_new_tokens", 64L)); // no room below max_slots 64
        assertTrue(refused(BundleException.INCONSISTENT).getMessage().contains("max_new_tokens"));
        edit(m -> at(m, "layout").put("num_image_tokens", 64L));
        refused(BundleException.INCONSISTENT);
        edit(m -> at(m, "tokenizer").put("stop_ids", Arrays.<Object>asList(2L, 64L))); // vocab_size is 64
        refused(BundleException.INCONSISTENT);
        edit(m -> { // 3 layers x 4 heads x 32768 slots x 1024: each within the schema's bounds, the cache over 2^28 values
            at(m, "layout").put("num_kv_heads", 4L);
            at(m, "layout").put("max_slots", 32768L);
            at(m, "layout").put("head_dim", 1024L);
        });
        assertTrue(refused(BundleException.INCONSISTENT).getMessage().contains("key/value cache"));
        edit(m -> at(m, "layout", "graphs").remove("fill1"));
        assertTrue(refused(BundleException.INCONSISTENT).getMessage().contains("layout.graphs"));
        edit(m -> at(m, "layout", "graphs").put("head", Arrays.<Object>asList("scores")));
        refused(BundleException.INCONSISTENT);
        edit(m -> at(Json.obj(Json.arr(m.get("artifacts")).get(1)), "stages").remove("vision"));
        assertTrue(refused(BundleException.INCONSISTENT).getMessage().contains("does not hold every graph"));
    }

    @Test
    public void theTokenizerMustFitTheManifest() throws Exception {
        edit(m -> at(m, "layout").put("num_image_tokens", 15L)); // the template holds 16
        assertTrue(refused(BundleException.TOKENIZER).getMessage().contains("not one block of 15"));
        edit(m -> at(m, "layout").put("image_token_id", 41L)); // <fake_token_around_image>: two, apart
        refused(BundleException.TOKENIZER);
        edit(m -> at(m, "model").put("vocab_size", 42L)); // consistent (ids 2 and 40 below it), but the template gives 42
        refused(BundleException.TOKENIZER);
        editTokenizer(t -> Json.obj(t.get("model")).put("vocab", "none"));
        refused(BundleException.TOKENIZER);
        writeListed(dir.resolve("tokenizer.json"), "{\"model\": NaN}".getBytes(StandardCharsets.UTF_8));
        refused(BundleException.TOKENIZER);
    }

    @Test
    public void aTokenizerWithUnsupportedComponentsIsRefused() throws Exception {
        editTokenizer(t -> t.put("normalizer", obj("type", "Replace")));
        BundleException exc = refused(BundleException.UNSUPPORTED);
        assertTrue(exc.getMessage(), exc.getMessage().contains("normalizer \"Replace\"") && exc.getMessage().contains("Python runtime"));
        editTokenizer(t -> t.put("pre_tokenizer", obj("type", "Sequence", "pretokenizers", Arrays.<Object>asList(
                obj("type", "Digits", "individual_digits", true), obj("type", "Metaspace")))));
        assertTrue(refused(BundleException.UNSUPPORTED).getMessage().contains("pre_tokenizer[1] \"Metaspace\""));
        editTokenizer(t -> Json.obj(t.get("model")).put("type", "Unigram"));
        refused(BundleException.UNSUPPORTED);
        editTokenizer(t -> t.put("decoder", obj("type", "WordPiece")));
        refused(BundleException.UNSUPPORTED);
        editTokenizer(t -> Json.obj(Json.arr(t.get("added_tokens")).get(0)).put("lstrip", true));
        refused(BundleException.UNSUPPORTED);
        // the byte-level BPE of the vectors, with byte_fallback: a component this runtime does not implement
        Map<String, Object> bpe = Json.obj(Json.parse(Files.readAllBytes(VLMVectors.dir().resolve("bpe-tokenizer.json")), 64));
        Json.obj(bpe.get("model")).put("byte_fallback", true);
        try {
            HFTokenizer.fromJson(Json.write(bpe).getBytes(StandardCharsets.UTF_8), "bpe-tokenizer.json");
            fail();
        } catch (BundleException e) {
            assertEquals(BundleException.UNSUPPORTED, e.code());
            assertTrue(e.getMessage().contains("BPE byte_fallback"));
        }
    }

    private static Map<String, Object> obj(Object... kv) {
        Map<String, Object> out = new java.util.LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) out.put((String) kv[i], kv[i + 1]);
        return out;
    }

    @Test
    public void rollbackAndSignatures() throws Exception {
        VLMEngine.Options o = new VLMEngine.Options();
        o.minSequence = 1796603857400L;
        assertTrue(refused(BundleException.ROLLBACK, o).getMessage().contains("below the app's minimum"));
        o = new VLMEngine.Options();
        o.expectName = "another";
        refused(BundleException.ROLLBACK, o);
        o = new VLMEngine.Options();
        o.verifyKey = ((String) Golden.json(Golden.golden().resolve("signature.json")).get("public_key_pem"))
                .getBytes(StandardCharsets.US_ASCII);
        refused(BundleException.SIGNATURE_MISSING, o);
        Files.write(dir.resolve("manifest.sig"), new byte[64]);
        refused(BundleException.SIGNATURE_MALFORMED, o);
    }

    @Test
    public void badOptionsAreConfigErrorsBeforeAnyCheck() {
        VLMEngine.Options o = new VLMEngine.Options();
        o.keepRatio = 0.0;
        o.kv = "sometimes";
        o.threads = 0;
        try {
            VLMEngine.load(dir, new ReplayVLMRunner.Factory(replay, false, false), o);
            fail();
        } catch (ConfigException exc) {
            List<String> problems = exc.problems();
            assertEquals(exc.getMessage(), 3, problems.size());
            assertTrue(exc.getMessage(), exc.getMessage().contains("keep ratio 0.0 must be a number in (0, 1]"));
        }
        try {
            VLMEngine.load(dir, null, new VLMEngine.Options());
            fail();
        } catch (ConfigException exc) {
            assertTrue(exc.getMessage().contains("VLMRunner.Factory"));
        }
        VLMEngine.Options any = new VLMEngine.Options();
        any.keepRatio = 0.3; // not a distilled ratio: any ratio in (0, 1] runs
        VLMEngine.load(dir, new ReplayVLMRunner.Factory(replay, false, false), any).close();
        VLMEngine.Options int4 = new VLMEngine.Options();
        int4.precision = "int4"; // a precision this bundle does not have
        refused(BundleException.UNSUPPORTED, int4);
    }

    @Test
    public void nanGraphOutputsFailTheSelfCheck() {
        ReplayVLMRunner.Factory f = new ReplayVLMRunner.Factory(replay, false, true);
        BundleException exc = BundleCopy.refused(BundleException.SELF_CHECK, () -> VLMEngine.load(dir, f, new VLMEngine.Options()).close());
        assertTrue(exc.getMessage(), exc.getMessage().contains("non-finite logits"));
        assertTrue("the runner is closed", f.last.closed);
        VLMEngine.Options skip = new VLMEngine.Options();
        skip.selfCheck = false;
        VLMEngine.load(dir, new ReplayVLMRunner.Factory(replay, false, true), skip).close();
    }
}
