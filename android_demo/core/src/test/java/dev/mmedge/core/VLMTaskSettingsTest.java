package dev.mmedge.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.mmedge.core.testing.BundleCopy;
import dev.mmedge.core.testing.Golden;
import dev.mmedge.core.testing.ReplayVLMRunner;
import dev.mmedge.core.testing.VLMVectors;

import java.io.IOException;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * The settings per task of a generative VLM bundle (docs/bundle-format.md "Generative VLM bundles",
 * "Settings"; mmedge/runtime/vlm_engine.py settings, generate(task=...), caption()), on a copy of the
 * tiny bundle whose thresholds (confidence 0.510205 at keep 0.5) gain {@code tasks}: captions
 * max_probability 0.116324 at keep 1, answers patience 2 at keep 0.5. A generation told its task runs
 * under that task's setting and gives the tokens and exits the Python engine gave under that setting
 * (tests/vectors/vlm/vectors.json, over the replayed graph calls); the request's policy and keep ratio
 * override the task's, the load options override every task's, a policy by name takes the task's
 * threshold and patience, an unknown task is a bad argument.
 */
public class VLMTaskSettingsTest {
    private static Map<String, Object> doc;
    private static Map<String, Object> replay;
    private static BundleCopy copy;
    private static VLMEngine engine;
    private static int checked;

    private static final Policy CAPTION = new Policy("max_probability", 0.116324, 2, 0.0);
    private static final Policy ANSWER = new Policy("patience", 1.0, 2, 0.0);
    private static final Policy TOP = new Policy("confidence", 0.510205, 2, 0.0);

    /** One thresholds.tasks entry. */
    static Map<String, Object> setting(String policy, double threshold, long patience, double keepRatio) {
        Map<String, Object> s = new LinkedHashMap<>();
        s.put("policy", policy);
        s.put("threshold", threshold);
        s.put("patience", patience);
        s.put("keep_ratio", keepRatio);
        return s;
    }

    /** The tasks this test gives the tiny bundle (VLMBenchmarkTest's too). */
    static Map<String, Object> tasks() {
        Map<String, Object> tasks = new LinkedHashMap<>();
        tasks.put("caption", setting("max_probability", 0.116324, 2L, 1.0));
        tasks.put("answer", setting("patience", 1.0, 2L, 0.5));
        return tasks;
    }

    /** A copy of the tiny bundle with {@link #tasks()} in its thresholds. */
    static BundleCopy withTasks(String prefix) throws IOException {
        BundleCopy c = BundleCopy.of(VLMVectors.bundle(), prefix);
        c.edit(m -> Json.obj(m.get("thresholds")).put("tasks", tasks()));
        return c;
    }

    @BeforeClass
    public static void load() throws IOException {
        doc = VLMVectors.vectors();
        replay = VLMVectors.replay();
        copy = withTasks("mmedge-vlm-tasks-");
        engine = load(new VLMEngine.Options());
    }

    @AfterClass
    public static void remove() throws IOException {
        if (engine != null) engine.close();
        if (copy != null) copy.close();
        System.out.println("# vlm settings per task (Java core): " + checked + " generations equal the vectors'");
    }

    private static VLMEngine load(VLMEngine.Options o) {
        return VLMEngine.load(copy.dir, new ReplayVLMRunner.Factory(replay, false, false), o);
    }

    /** The vectors' greedy run of a query under a policy and keep ratio (kv copy, max_new_tokens 10), or null. */
    static Map<String, Object> run(Map<String, Object> query, Policy p, double ratio) {
        for (Object o : Json.arr(query.get("runs"))) {
            Map<String, Object> run = Json.obj(o);
            Map<String, Object> policy = Json.obj(run.get("policy"));
            boolean thresholded = "confidence".equals(p.kind) || "max_probability".equals(p.kind);
            if (p.kind.equals(policy.get("kind")) && Json.num(run.get("keep_ratio")) == ratio && "copy".equals(run.get("kv"))
                    && Json.lng(run.get("beam")) == 1 && Json.lng(run.get("max_new_tokens")) == 10
                    && (!thresholded || Json.num(policy.get("threshold")) == p.threshold)
                    && (!"patience".equals(p.kind) || Json.lng(policy.get("patience")) == p.patience)) {
                return run;
            }
        }
        return null;
    }

    private static Map<String, Object> query(String image, String prompt) {
        for (Object o : Json.arr(doc.get("queries"))) {
            Map<String, Object> q = Json.obj(o);
            if (image.equals(q.get("image")) && prompt.equals(q.get("prompt"))) return q;
        }
        throw new IllegalArgumentException("no query " + image + " '" + prompt + "' in the vectors");
    }

    /** `g` is the vectors' generation of `q` under (p, ratio), and says it was made so. */
    private static void same(String where, Map<String, Object> q, Policy p, double ratio, Generation g) {
        Map<String, Object> want = run(q, p, ratio);
        assertNotNull(where + ": the vectors have no run of " + p + " at keep " + ratio, want);
        assertArrayEquals(where + " tokens", Golden.ints(want.get("tokens")), g.tokens);
        assertArrayEquals(where + " exits", Golden.ints(want.get("exits")), g.exits);
        assertEquals(where + " text", want.get("text"), g.text);
        assertEquals(where + " policy", p, g.policy);
        assertEquals(where + " keep ratio", ratio, g.keepRatio, 0);
        checked++;
    }

    private static Generation generate(VLMEngine e, Map<String, Object> q, VLMEngine.Request request) {
        Golden.Image im = VLMVectors.image(doc, (String) q.get("image"));
        return e.generate(im.argb, im.width, im.height, (String) q.get("prompt"), request);
    }

    private static VLMEngine.Request task(String task) {
        VLMEngine.Request r = new VLMEngine.Request();
        r.task = task;
        return r;
    }

    @Test
    public void theManifestHoldsEachTasksSetting() {
        Map<String, VLMManifest.Setting> tasks = engine.manifest.thresholds.tasks;
        assertEquals(Arrays.asList("caption", "answer"), Arrays.asList(tasks.keySet().toArray()));
        assertEquals("max_probability", tasks.get("caption").policy);
        assertEquals(0.116324, tasks.get("caption").threshold, 0);
        assertEquals(1.0, tasks.get("caption").keepRatio, 0);
        assertEquals(2, tasks.get("answer").patience);
        assertTrue("the committed bundle has none", VLMLoader.load(VLMVectors.bundle(), null, null).manifest.thresholds.tasks.isEmpty());
        assertEquals(CAPTION, engine.settings("caption").policy);
        assertEquals(1.0, engine.settings("caption").keepRatio, 0);
        assertEquals(ANSWER, engine.settings("answer").policy);
        assertEquals(0.5, engine.settings("answer").keepRatio, 0);
        assertEquals("any prompt: the top-level thresholds", TOP, engine.settings(null).policy);
        assertEquals(0.5, engine.settings(null).keepRatio, 0);
        assertEquals(TOP, engine.policy());
    }

    /** Every query told its task generates under that task's setting; caption() under the caption's; untold, the top level's. */
    @Test
    public void eachTaskGeneratesAsTheVectorsUnderItsSetting() {
        for (Object o : Json.arr(doc.get("queries"))) {
            Map<String, Object> q = Json.obj(o);
            String where = q.get("image") + " '" + q.get("prompt") + "'";
            same(where + " caption", q, CAPTION, 1.0, generate(engine, q, task("caption")));
            same(where + " answer", q, ANSWER, 0.5, generate(engine, q, task("answer")));
            same(where + " any", q, TOP, 0.5, generate(engine, q, null));
            if (q.get("prompt").equals(engine.manifest.captionPrompt)) {
                Golden.Image im = VLMVectors.image(doc, (String) q.get("image"));
                same(where + " caption()", q, CAPTION, 1.0, engine.caption(im.argb, im.width, im.height, null));
                same(where + " caption(task caption)", q, CAPTION, 1.0, engine.caption(im.argb, im.width, im.height, task("caption")));
            }
        }
    }

    @Test
    public void theRequestOverridesTheTasksSetting() {
        Map<String, Object> q = query("wide", "describe the image.");
        VLMEngine.Request r = task("caption");
        r.keepRatio = 0.5;
        same("caption at keep 0.5", q, CAPTION, 0.5, generate(engine, q, r));
        r = task("answer");
        r.policy = TOP;
        same("answer under confidence", q, TOP, 0.5, generate(engine, q, r));
        r = task("answer");
        r.policy = Policy.of("full");
        r.keepRatio = 1.0;
        same("answer at full depth, keep 1", q, Policy.of("full"), 1.0, generate(engine, q, r));
        // a policy by name takes the threshold and patience of the setting it replaces
        assertEquals(new Policy("confidence", 0.116324, 2, 0.0), engine.policyForTask("confidence", "caption"));
        assertEquals(new Policy("max_probability", 1.0, 2, 0.0), engine.policyForTask("max_probability", "answer"));
        assertEquals(new Policy("max_probability", 0.510205, 2, 0.0), engine.policyForTask("max_probability", null));
        assertEquals(Policy.of("full"), engine.policyForTask("full", "caption"));
        r = task("answer");
        r.policy = engine.policyForTask("max_probability", "caption");
        same("answer under the caption's max_probability", q, CAPTION, 0.5, generate(engine, q, r));
    }

    @Test
    public void loadOptionsOverrideEveryTask() {
        Map<String, Object> q = query("wide", "What color is the circle?");
        VLMEngine.Options o = new VLMEngine.Options();
        o.keepRatio = 1.0;
        try (VLMEngine e = load(o)) {
            assertEquals(1.0, e.settings("answer").keepRatio, 0);
            assertEquals(ANSWER, e.settings("answer").policy);
            assertEquals(1.0, e.settings(null).keepRatio, 0);
            same("answer at the load's keep 1", q, ANSWER, 1.0, generate(e, q, task("answer")));
            same("any at the load's keep 1", q, TOP, 1.0, generate(e, q, null));
            VLMEngine.Request r = task("caption");
            r.keepRatio = 0.5; // the request's over the load's
            same("caption at the request's keep 0.5", q, CAPTION, 0.5, generate(e, q, r));
        }
        o = new VLMEngine.Options();
        o.policy = Policy.of("full");
        try (VLMEngine e = load(o)) {
            same("caption at the load's full depth", q, Policy.of("full"), 1.0, generate(e, q, task("caption")));
            same("answer at the load's full depth", q, Policy.of("full"), 0.5, generate(e, q, task("answer")));
            // the setters act as the load options: on every task
            e.setPolicy(TOP);
            e.setKeepRatio(1.0);
            same("caption after setPolicy, setKeepRatio", q, TOP, 1.0, generate(e, q, task("caption")));
            same("answer after setPolicy, setKeepRatio", q, TOP, 1.0, generate(e, q, task("answer")));
        }
        // a bundle without tasks: every task takes the top-level thresholds
        try (VLMEngine e = VLMEngine.load(VLMVectors.bundle(), new ReplayVLMRunner.Factory(replay), new VLMEngine.Options())) {
            same("the committed bundle, caption", q, TOP, 0.5, generate(e, q, task("caption")));
            same("the committed bundle, answer", q, TOP, 0.5, generate(e, q, task("answer")));
        }
    }

    @Test
    public void anUnknownTaskIsABadArgument() {
        Map<String, Object> q = query("square", "describe the image.");
        try {
            generate(engine, q, task("vqa"));
            fail("task vqa");
        } catch (ConfigException exc) {
            assertTrue(exc.getMessage(), exc.getMessage().startsWith("invalid arguments:"));
            assertTrue(exc.getMessage(), exc.getMessage().contains("task 'vqa' unknown; choose one of [caption, answer]"));
        }
        VLMEngine.Request r = task("Caption");
        r.beam = 0;
        try {
            generate(engine, q, r);
            fail();
        } catch (ConfigException exc) {
            assertEquals("every problem listed", 2, exc.problems().size());
        }
        try {
            engine.settings("vqa");
            fail();
        } catch (ConfigException exc) {
            assertTrue(exc.getMessage(), exc.getMessage().contains("task 'vqa' unknown"));
        }
        try {
            engine.policyForTask("confidence", "");
            fail();
        } catch (ConfigException exc) {
            assertTrue(exc.getMessage(), exc.getMessage().contains("task '' unknown"));
        }
        Golden.Image im = VLMVectors.image(doc, "square");
        try {
            engine.caption(im.argb, im.width, im.height, task("answer"));
            fail("caption() of an answer");
        } catch (ConfigException exc) {
            assertTrue(exc.getMessage(), exc.getMessage().contains("caption() generates a caption"));
        }
    }
}
