package dev.mmedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.mmedge.core.testing.BundleCopy;
import dev.mmedge.core.testing.CaptionVectors;
import dev.mmedge.core.testing.Golden;
import dev.mmedge.core.testing.NegativeVectors;
import dev.mmedge.core.testing.ReplayCaptionRunner;
import dev.mmedge.core.testing.ReplayStageRunner;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import org.junit.After;
import org.junit.AfterClass;
import org.junit.Before;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * A captioning bundle is loaded with every check of "Loading a bundle", with the same reason codes
 * (docs/bundle-format.md "Captioning bundles", "What a runtime checks"), each refusal before any
 * graph is opened; the classifier Engine and the CaptionEngine refuse each other's bundles
 * (unsupported); bad arguments are a ConfigException listing every problem.
 */
public class CaptionRefusalTest {
    private static Path pristine;
    private static Map<String, Object> replay;
    private BundleCopy copy;
    private Path dir;
    private String original;

    @BeforeClass
    public static void assemble() throws IOException {
        pristine = CaptionVectors.assembleBundle(Files.createTempDirectory("mmedge-caption-pristine-"));
        replay = CaptionVectors.replay();
    }

    @AfterClass
    public static void removePristine() throws IOException {
        NegativeVectors.removeTree(pristine.getParent());
    }

    @Before
    public void copy() throws IOException {
        copy = BundleCopy.of(pristine, "mmedge-caption-codes-");
        dir = copy.dir;
        original = copy.original;
    }

    @After
    public void remove() throws IOException {
        copy.close();
    }

    private BundleException refused(String code, CaptionEngine.Options o) {
        ReplayCaptionRunner.Factory f = new ReplayCaptionRunner.Factory(replay, false, false);
        BundleException exc = BundleCopy.refused(code, () -> CaptionEngine.load(dir, f, o).close());
        assertNull("no graph was opened", f.last);
        return exc;
    }

    private BundleException refused(String code) {
        return refused(code, new CaptionEngine.Options());
    }

    private void edit(Consumer<Map<String, Object>> change) throws Exception {
        copy.edit(change);
    }

    private static Map<String, Object> at(Map<String, Object> m, String... path) {
        Map<String, Object> node = m;
        for (String key : path) node = Json.obj(node.get(key));
        return node;
    }

    @Test
    public void theUntouchedCopyLoads() {
        try (CaptionEngine e = CaptionEngine.load(dir, new ReplayCaptionRunner.Factory(replay), new CaptionEngine.Options())) {
            assertEquals("replay", e.backend());
            assertEquals(4, e.numStages());
            assertEquals(Long.valueOf(1), e.releaseSequence());
            assertEquals(1.0, e.keepRatio(), 0);
            assertEquals("copy", e.kv());
            assertEquals(Policy.of("full").kind, e.policy().kind); // the uncalibrated bundle's thresholds
        }
    }

    @Test
    public void eachEngineRefusesTheOthersBundles() {
        try {
            Engine.load(dir, new ReplayStageRunner.Factory(Golden.queries(), false), new Engine.Options());
            fail();
        } catch (BundleException exc) {
            assertEquals(BundleException.UNSUPPORTED, exc.code());
            assertTrue(exc.getMessage(), exc.getMessage().contains("CaptionEngine.load"));
        }
        try {
            CaptionEngine.load(Golden.bundle(), new ReplayCaptionRunner.Factory(replay), new CaptionEngine.Options());
            fail();
        } catch (BundleException exc) {
            assertEquals(BundleException.UNSUPPORTED, exc.code());
            assertTrue(exc.getMessage(), exc.getMessage().contains("Engine.load"));
        }
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
        Files.write(weights, Files.readAllBytes(pristine.resolve("onnx/fp32/weights.bin")));
        Files.write(dir.resolve("onnx/fp32/extra.onnx"), new byte[] {1});
        refused(BundleException.UNLISTED);
    }

    @Test
    public void theCaptionSchemaAndConsistency() throws Exception {
        edit(m -> at(m, "thresholds").put("kv", "sometimes"));
        refused(BundleException.SCHEMA);
        edit(m -> at(m, "model", "config").put("image_size", 5000L)); // every number a runtime allocates from is bounded
        refused(BundleException.SCHEMA);
        edit(m -> at(m, "model", "config").put("exit_layers", "all")); // anyOf: null or a list
        refused(BundleException.SCHEMA);
        edit(m -> at(m, "tokenizer").put("file", "../tokenizer.json"));
        refused(BundleException.PATH);
        edit(m -> at(m, "decoder").put("num_heads", 8L));
        assertTrue(refused(BundleException.INCONSISTENT).getMessage().contains("num_heads"));
        // past_k of step1_k0.5 with 25 cache positions instead of decoder.max_len 24
        edit(m -> Json.arr(Json.obj(Json.arr(at(m, "graphs", "step1_k0.5").get("inputs")).get(2)).get("shape")).set(3, 25L));
        assertTrue(refused(BundleException.INCONSISTENT).getMessage().contains("step1_k0.5 inputs"));
        edit(m -> at(m, "graphs").remove("fill2"));
        refused(BundleException.INCONSISTENT);
        edit(m -> at(m, "graphs", "step2_k1").put("layers", Arrays.<Object>asList(3L)));
        refused(BundleException.INCONSISTENT);
        edit(m -> at(m, "thresholds").put("keep_ratio", 0.25));
        refused(BundleException.INCONSISTENT);
        edit(m -> at(m, "tokenizer").put("eos_id", 2L)); // the same id as [BOS]
        refused(BundleException.INCONSISTENT);
        edit(m -> Json.arr(at(m, "flops", "1").get("fill")).remove(0));
        refused(BundleException.INCONSISTENT);
    }

    @Test
    public void theTokenizerMustGiveTheManifestsSpecialIds() throws Exception {
        edit(m -> at(m, "tokenizer").put("bos_id", 4L)); // "." in the vocabulary: consistent, but not the file's [BOS]
        assertTrue(refused(BundleException.TOKENIZER).getMessage().contains("[BOS]"));
        edit(m -> at(m, "tokenizer").put("kind", "wordpiece"));
        refused(BundleException.TOKENIZER);
    }

    @Test
    public void rollbackAndSignatures() throws Exception {
        CaptionEngine.Options o = new CaptionEngine.Options();
        o.minSequence = 2L;
        assertTrue(refused(BundleException.ROLLBACK, o).getMessage().contains("below the app's minimum 2"));
        o = new CaptionEngine.Options();
        o.expectName = "another";
        refused(BundleException.ROLLBACK, o);
        o = new CaptionEngine.Options();
        o.verifyKey = ((String) Golden.json(Golden.golden().resolve("signature.json")).get("public_key_pem"))
                .getBytes(StandardCharsets.US_ASCII);
        refused(BundleException.SIGNATURE_MISSING, o);
    }

    /**
     * What the app's ONNX Runtime runner hands to AddExternalInitializers: each graph's external
     * initializers, read from its protobuf, are float32 stretches of the listed weights file, and
     * together they are exactly the stretches weights.json rebuilds (made with the onnx package).
     */
    @Test
    public void theGraphsExternalInitializersLieInTheWeightsFile() throws Exception {
        long size = Files.size(dir.resolve("onnx/fp32/weights.bin"));
        java.util.Set<String> found = new java.util.TreeSet<>();
        Manifest.Artifact onnx = new CaptionManifest(Json.obj(Json.parse(original, 64))).artifacts.get(0);
        for (Map.Entry<String, Manifest.ArtifactStage> e : onnx.stages.entrySet()) {
            byte[] graph = Files.readAllBytes(dir.resolve(e.getValue().file));
            List<OnnxExternalData.ExternalTensor> tensors = OnnxExternalData.externalInitializers(graph);
            assertTrue(e.getKey() + " reads weights", !tensors.isEmpty());
            java.util.Set<String> names = new java.util.HashSet<>();
            for (OnnxExternalData.ExternalTensor t : tensors) {
                assertTrue(names.add(t.name));
                assertEquals("weights.bin", t.location);
                assertEquals("float32", 1, t.dataType);
                long n = 4;
                for (long d : t.dims) n *= d;
                assertEquals(t.name, n, t.length);
                assertTrue(t.offset + t.length <= size);
                found.add(t.offset + ":" + t.length);
            }
        }
        java.util.Set<String> recipe = new java.util.TreeSet<>();
        for (Object o : Json.arr(Golden.json(CaptionVectors.dir().resolve("weights.json")).get("segments"))) {
            recipe.add(Json.lng(Json.obj(o).get("offset")) + ":" + Json.lng(Json.obj(o).get("length")));
        }
        assertEquals(recipe, found);
    }

    @Test
    public void nanOutputsFailTheSelfCheck() {
        try {
            CaptionEngine.load(dir, new ReplayCaptionRunner.Factory(replay, true, true), new CaptionEngine.Options());
            fail();
        } catch (BundleException exc) {
            assertEquals(BundleException.SELF_CHECK, exc.code());
            assertTrue(exc.getMessage(), exc.getMessage().contains("non-finite"));
        }
        CaptionEngine.Options o = new CaptionEngine.Options();
        o.selfCheck = false; // loads; the first caption meets the NaN
        try (CaptionEngine e = CaptionEngine.load(dir, new ReplayCaptionRunner.Factory(replay, true, true), o)) {
            assertEquals("replay", e.backend());
        }
    }

    @Test
    public void badArgumentsAreConfigExceptions() {
        CaptionEngine.Options o = new CaptionEngine.Options();
        o.kv = "sometimes";
        o.threads = 0;
        o.precision = "fp16";
        try {
            CaptionEngine.load(dir, new ReplayCaptionRunner.Factory(replay), o);
            fail();
        } catch (ConfigException exc) {
            assertEquals(exc.getMessage(), 3, exc.problems().size());
        }
        o = new CaptionEngine.Options();
        o.keepRatio = 0.25;
        try {
            CaptionEngine.load(dir, new ReplayCaptionRunner.Factory(replay), o);
            fail();
        } catch (ConfigException exc) {
            assertTrue(exc.getMessage(), exc.getMessage().contains("was not exported"));
        }
        try (CaptionEngine e = CaptionEngine.load(dir, new ReplayCaptionRunner.Factory(replay), new CaptionEngine.Options())) {
            CaptionEngine.Request r = new CaptionEngine.Request();
            r.beam = 17;
            r.maxLen = 25;
            r.kv = "never";
            r.keepRatio = 0.3;
            try {
                e.captionPixels(new float[3 * 96 * 96], r);
                fail();
            } catch (ConfigException exc) {
                assertEquals(exc.getMessage(), 4, exc.problems().size());
            }
            try {
                e.captionPixels(new float[5], null);
                fail();
            } catch (ConfigException exc) {
                assertTrue(exc.getMessage().contains("pixel_values"));
            }
            try {
                e.setKv("maybe");
                fail();
            } catch (ConfigException expected) {
                assertEquals("copy", e.kv());
            }
            try {
                e.caption(new int[4], 2, 2, null);
                fail();
            } catch (ImageException expected) {
                assertTrue(expected.getMessage().contains("8 px"));
            }
        }
    }
}
