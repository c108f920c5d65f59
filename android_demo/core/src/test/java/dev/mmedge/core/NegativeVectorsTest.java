package dev.mmedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.mmedge.core.testing.Golden;
import dev.mmedge.core.testing.NegativeVectors;
import dev.mmedge.core.testing.ReplayStageRunner;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.junit.Assume;
import org.junit.Test;

/**
 * The negative golden vectors (tests/vectors/negative/cases.json), which the Python Engine and the
 * JavaScript runtime check too: each case's ops applied to a fresh copy of the shipped bundle, then
 * loaded with the case's options. A control (code null) must load and answer; every other case must
 * be refused with a BundleException whose code() is the case's code. Cases marked needs_backend
 * (the refusal comes from running the graphs, e.g. NaN weights) run with replayed stage outputs
 * that are all NaN, since this JVM has no ONNX Runtime: the load-time self-check must refuse them.
 * A load that does not return within a minute (a FIFO opened) fails the case.
 */
public class NegativeVectorsTest {
    private static final long CASE_TIMEOUT_S = 60;

    /** What loading one case gave: null when it loaded (and answered), else the refusal's code or an error. */
    private static String outcome(Map<String, Object> doc, Map<String, Object> c, Map<String, Object> golden,
                                  Path vectors) throws Exception {
        Path tmp = Files.createTempDirectory("mmedge-negative-");
        try {
            Path bundle = tmp.resolve("outside").resolve("vqa-default-onnx.mmedge");
            NegativeVectors.copyBase(Golden.repo().resolve((String) doc.get("base")), bundle);
            NegativeVectors.applyOps(bundle, Json.arr(c.get("ops")), vectors);
            Engine.Options options = NegativeVectors.options(doc, Json.obj(c.get("load")));
            ReplayStageRunner.Factory factory =
                    new ReplayStageRunner.Factory(golden, false, Boolean.TRUE.equals(c.get("needs_backend")));
            ExecutorService pool = Executors.newSingleThreadExecutor(r -> {
                Thread t = new Thread(r, "negative-vector-load");
                t.setDaemon(true); // a load stuck on a FIFO must not keep the JVM alive
                return t;
            });
            try {
                Future<String> result = pool.submit(() -> {
                    try (Engine engine = Engine.load(bundle, factory, options)) {
                        Map<String, Object> q = Json.obj(Json.arr(golden.get("queries")).get(0));
                        Golden.Image im = Golden.png(Golden.golden().resolve((String) q.get("image")));
                        Engine.Prediction p = engine.predict(im.argb, im.width, im.height, (String) q.get("text"), null, null);
                        assertEquals("a control that loads answers as the shipped bundle",
                                Json.obj(q.get("default")).get("answer"), p.answer);
                        return null;
                    } catch (BundleException exc) {
                        assertNotNull(exc.code());
                        assertTrue("a short message: " + exc.getMessage(), exc.getMessage().length() < 2000);
                        if (!exc.code().equals(c.get("code"))) {
                            System.out.println("#   " + c.get("name") + ": " + exc.code() + ": "
                                    + BundleLoader.shortText(exc.getMessage().replace('\n', ' '), 300));
                        }
                        return exc.code();
                    }
                });
                try {
                    return result.get(CASE_TIMEOUT_S, TimeUnit.SECONDS);
                } catch (TimeoutException exc) {
                    result.cancel(true);
                    return "(hung over " + CASE_TIMEOUT_S + " s)";
                } catch (java.util.concurrent.ExecutionException exc) {
                    Throwable cause = exc.getCause();
                    return "(" + cause.getClass().getSimpleName() + ": "
                            + BundleLoader.shortText(String.valueOf(cause.getMessage()), 200) + ")";
                }
            } finally {
                pool.shutdownNow();
            }
        } finally {
            NegativeVectors.removeTree(tmp);
        }
    }

    @Test
    public void everyCaseGivesItsCode() throws Exception {
        Path vectors = NegativeVectors.dir();
        Map<String, Object> doc = NegativeVectors.load(vectors);
        Assume.assumeTrue("tests/vectors/negative/cases.json is not there (python scripts/make_negative_vectors.py)",
                doc != null);
        assertEquals(NegativeVectors.FORMAT, doc.get("format"));
        Map<String, Object> golden = Golden.queries();
        List<Object> cases = Json.arr(doc.get("cases"));
        assertTrue(cases.size() >= 10);
        List<String> wrong = new ArrayList<>();
        Map<String, Integer> byCode = new TreeMap<>();
        int controls = 0;
        for (Object o : cases) {
            Map<String, Object> c = Json.obj(o);
            Object want = c.get("code") == Json.NULL ? null : c.get("code");
            String got = outcome(doc, c, golden, vectors);
            boolean ok = want == null ? got == null : want.equals(got);
            if (!ok) {
                wrong.add(c.get("name") + ": expected " + (want == null ? "to load" : want) + ", got "
                        + (got == null ? "a load" : got));
            } else if (want == null) {
                controls++;
            } else {
                byCode.merge((String) want, 1, Integer::sum);
            }
        }
        System.out.println("# negative vectors (Java core): " + (cases.size() - wrong.size()) + " of " + cases.size()
                + " as expected (" + controls + " controls loaded; refused by code: " + byCode + ")");
        for (String w : wrong) System.out.println("#   WRONG " + w);
        if (!wrong.isEmpty()) fail(wrong.size() + " negative vectors differ:\n  " + String.join("\n  ", wrong));
    }

    /** The ops on a hand-made case: each kind does what the format says. */
    @Test
    public void opsDoWhatTheFormatSays() throws Exception {
        Path tmp = Files.createTempDirectory("mmedge-negative-ops-");
        try {
            Path bundle = tmp.resolve("b.mmedge");
            Files.createDirectories(bundle.resolve("sub"));
            Files.write(bundle.resolve("sub/x"), new byte[] {1});
            Path vectors = tmp.resolve("vectors");
            Files.createDirectories(vectors.resolve("files"));
            Files.write(vectors.resolve("files/v.bin"), new byte[] {7, 7});
            Map<String, Object> doc = new LinkedHashMap<>();
            List<Object> ops = Json.arr(Json.parse("[{\"op\":\"write\",\"path\":\"a/b.txt\",\"base64\":\"aGk=\"},"
                    + "{\"op\":\"write_repeat\",\"path\":\"r\",\"base64\":\"YWI=\",\"count\":3},"
                    + "{\"op\":\"copy_vector\",\"path\":\"c/v\",\"from\":\"v.bin\"},"
                    + "{\"op\":\"remove\",\"path\":\"sub\"},{\"op\":\"mkdir\",\"path\":\"d\"},"
                    + "{\"op\":\"mkfifo\",\"path\":\"f\"},{\"op\":\"symlink\",\"path\":\"l\",\"target\":\"../o.txt\"},"
                    + "{\"op\":\"write_outside\",\"name\":\"o.txt\",\"base64\":\"bw==\"}]", 8));
            NegativeVectors.applyOps(bundle, ops, vectors);
            assertEquals("hi", new String(Files.readAllBytes(bundle.resolve("a/b.txt")), "UTF-8"));
            assertEquals("ababab", new String(Files.readAllBytes(bundle.resolve("r")), "UTF-8"));
            assertEquals(2, Files.size(bundle.resolve("c/v")));
            assertTrue(!Files.exists(bundle.resolve("sub")));
            assertTrue(Files.isDirectory(bundle.resolve("d")));
            assertTrue(Files.isSymbolicLink(bundle.resolve("l")));
            assertEquals("o", new String(Files.readAllBytes(bundle.resolve("l")), "UTF-8"));
            java.nio.file.attribute.BasicFileAttributes fifo = Files.readAttributes(bundle.resolve("f"),
                    java.nio.file.attribute.BasicFileAttributes.class, java.nio.file.LinkOption.NOFOLLOW_LINKS);
            assertTrue(fifo.isOther());
            doc.put("public_key_pem", "PEM");
            Engine.Options o = NegativeVectors.options(doc, Json.obj(Json.parse(
                    "{\"verify_key\": true, \"min_sequence\": 5, \"expect_name\": null}", 4)));
            assertEquals(Long.valueOf(5), o.minSequence);
            assertEquals(null, o.expectName);
            assertEquals("PEM", new String(o.verifyKey, "US-ASCII"));
        } finally {
            NegativeVectors.removeTree(tmp);
        }
    }
}
