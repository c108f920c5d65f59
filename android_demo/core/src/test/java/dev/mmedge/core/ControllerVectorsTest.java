package dev.mmedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.mmedge.core.testing.Golden;

import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** tests/vectors/controller.json (the decisions mmedge.runtime.controller pins), and policy checks. */
public class ControllerVectorsTest {
    private static double[] doubles(Object list) {
        List<Object> l = Json.arr(list);
        double[] out = new double[l.size()];
        for (int i = 0; i < out.length; i++) out[i] = Json.num(l.get(i));
        return out;
    }

    @Test
    public void everyCase() {
        Map<String, Object> vectors = Golden.json(Golden.repo().resolve("tests/vectors/controller.json"));
        assertEquals(1L, vectors.get("version"));
        List<Object> cases = Json.arr(vectors.get("cases"));
        assertTrue(cases.size() >= 16);
        for (Object o : cases) {
            Map<String, Object> c = Json.obj(o);
            Policy policy = Policy.fromJson(Json.obj(c.get("policy")));
            double[] answersD = doubles(c.get("answers"));
            int[] answers = new int[answersD.length];
            for (int i = 0; i < answers.length; i++) answers[i] = (int) answersD[i];
            double[] stageMs = c.get("stage_ms") instanceof List ? doubles(c.get("stage_ms")) : null;
            int got = Controller.decideOffline(policy, answers, doubles(c.get("confidences")), doubles(c.get("max_probabilities")),
                    stageMs);
            assertEquals((String) c.get("name"), Json.lng(c.get("expected_exit")), got);
        }
        System.out.println("# controller vectors (Java core): " + cases.size() + " cases, all equal");
    }

    @Test
    public void lastExitAlwaysStopsBeforeItThePolicyDecides() {
        Controller.State s = new Controller.State();
        s.add(1, 0.1, 0.1);
        s.add(1, 0.1, 0.1);
        assertTrue(Controller.shouldStop(Policy.of("full"), s, 2, null));
        assertFalse(Controller.shouldStop(Policy.of("full"), s, 3, null));
        assertTrue(Controller.shouldStop(new Policy("patience", 0.9, 2, 0), s, 3, null));
        s.elapsedMs = 4;
        Policy budget = new Policy("latency_budget", 0, 2, 5);
        assertTrue(Controller.shouldStop(budget, s, 3, 2.0));
        assertFalse(Controller.shouldStop(budget, s, 3, 1.0));
        assertFalse(Controller.shouldStop(budget, s, 3, null));
    }

    @Test
    public void softmaxMaxInDoublePrecision() {
        assertEquals(0.5, Controller.softmaxMax(new float[] {0, 0}), 0);
        assertEquals(1.0, Controller.softmaxMax(new float[] {1000, 0, -1000}), 1e-12);
        double e = Math.exp(1) + Math.exp(2) + Math.exp(3);
        assertEquals(Math.exp(3) / e, Controller.softmaxMax(new float[] {1, 2, 3}), 1e-15);
        assertEquals(1, Controller.argmax(new float[] {0, 2, 2}));
    }

    @Test
    public void invalidPoliciesListEveryProblem() {
        List<Runnable> bad = Arrays.asList(
                () -> Policy.of("fastest"),
                () -> new Policy("confidence", 1.5, 2, 0),
                () -> new Policy("confidence", Double.NaN, 2, 0),
                () -> new Policy("patience", 0.9, 0, 0),
                () -> Policy.of("latency_budget"));
        for (Runnable r : bad) {
            try {
                r.run();
                fail("accepted");
            } catch (ConfigException expected) {
                assertTrue(expected.getMessage().startsWith("invalid exit policy"));
            }
        }
        try {
            new Policy("nope", -1, 2, 0);
            fail("accepted");
        } catch (ConfigException exc) {
            assertEquals(2, exc.problems().size());
        }
        try {
            Policy.fromJson(Json.obj(Json.parse("{\"kind\": \"patience\", \"patience\": 1.5}", 4)));
            fail("accepted");
        } catch (ConfigException expected) {
            assertTrue(expected.getMessage().contains("whole number"));
        } catch (Json.ParseException exc) {
            throw new AssertionError(exc);
        }
    }
}
