package dev.mmedge.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.mmedge.core.testing.Golden;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** JSON strictness, the schema copy, preprocessing corner cases, paths, statistics and CPU lists. */
public class UnitsTest {
    private static void badJson(String text, String why) {
        try {
            Json.parse(text.getBytes(StandardCharsets.UTF_8), 32);
            fail("accepted " + why + ": " + text);
        } catch (Json.ParseException expected) {
            // refused
        }
    }

    /** docs/bundle-format.md's JSON edge cases: each refused, with the reason in the message. */
    @Test
    public void jsonEdgeCasesAreRefused() throws Exception {
        String[][] cases = {
            {"\ufeff{}", "byte-order mark"},
            {"{\"a\": 1, \"a\": 2}", "duplicate key 'a'"},
            {"{\"a\": 1, \"a\": 1}", "duplicate key"},
            {"{\"x\": {\"b\": [], \"b\": []}}", "duplicate key 'b'"},
            {"{\"\\u0061\": 1, \"a\": 2}", "duplicate key 'a'"}, // the same key once decoded
            {"1e400", "overflows a double"},
            {"-1e400", "overflows a double"},
            {"[1E309]", "overflows a double"},
            {"9007199254740992", "beyond"},
            {"9007199254740993", "beyond"},
            {"-9007199254740993", "beyond"},
            {"123456789012345678901234567890", "beyond"},
            {"\"\\ud800\"", "unpaired surrogate"},
            {"\"\\udc00\"", "unpaired surrogate"},
            {"\"\\udc00\\ud800\"", "unpaired surrogate"},
            {"\"\\ud800x\"", "unpaired surrogate"},
            {"{\"\\ud800\": 1}", "unpaired surrogate"},
            {"\"\ud800\"", "unpaired surrogate"}, // a raw one (only a String can hold it; UTF-8 bytes cannot)
            {"NaN", "unexpected character"},
            {"[-Infinity]", "bad number"},
        };
        for (String[] c : cases) {
            try {
                Json.parse(c[0], 32);
                fail("accepted " + c[0]);
            } catch (Json.ParseException expected) {
                assertTrue(c[0] + ": " + expected.getMessage(), expected.getMessage().contains(c[1]));
            }
        }
        // the byte-order mark as bytes (the loader's path)
        try {
            Json.parse(new byte[] {(byte) 0xef, (byte) 0xbb, (byte) 0xbf, '{', '}'}, 32);
            fail("accepted a BOM");
        } catch (Json.ParseException expected) {
            assertTrue(expected.getMessage().contains("byte-order mark"));
        }
        // depth: the top-level value is level 1
        StringBuilder deep = new StringBuilder("{\"a\": ");
        for (int i = 0; i < 31; i++) deep.append('[');
        for (int i = 0; i < 31; i++) deep.append(']');
        Json.parse(deep + "}", 32);
        try {
            Json.parse(deep.toString().replace("{\"a\": ", "{\"a\": [") + "]}", 32);
            fail("accepted 33 levels");
        } catch (Json.ParseException expected) {
            assertTrue(expected.tooDeep);
        }
    }

    @Test
    public void jsonIsStrict() throws Exception {
        for (String bad : new String[] {"NaN", "[Infinity]", "{'a': 1}", "[1,]", "{\"a\":1,}", "01", "1.", ".5", "[1e]", "// x\n1",
                "\"\t\"", "tru", "[1] [2]", "\ufeff{}", "{\"a\" 1}", "1e999", "-", "\"\\x\""}) {
            badJson(bad, "non-strict JSON");
        }
        assertEquals(1L, Json.parse("1", 4));
        assertEquals(1.0, Json.parse("1.0", 4));
        assertEquals(100.0, Json.parse("1e2", 4));
        assertEquals("é\ud83d\udd34", Json.parse("\"\\u00e9\\ud83d\\udd34\"", 4));
        assertEquals(Json.MAX_SAFE_INTEGER, Json.parse("9007199254740991", 4));
        assertEquals(-Json.MAX_SAFE_INTEGER, Json.parse("-9007199254740991", 4));
        assertEquals(1e300, Json.parse("1e300", 4));
        assertEquals(9007199254740993.0, Json.parse("9007199254740993.0", 4)); // not an integer literal: a double
        assertEquals(0.0, Json.parse("1e-400", 4)); // underflow is no overflow
        assertEquals("\ud83d\ude00", Json.parse("\"\\ud83d\\ude00\"", 4));
        assertEquals("\ud83d\ude00", Json.parse("\"\\ud83d\ude00\"", 4)); // escaped high, raw low
        assertEquals(1L, Json.obj(Json.parse("{\"a\": 1, \"A\": 2, \"a \": 3}", 4)).get("a"));
        assertTrue(Json.equal(Json.parse("[1, {\"x\": 2.0}]", 4), Json.parse("[1.0, {\"x\": 2}]", 4)));
        try {
            Json.parse(new byte[] {'"', (byte) 0xc3, '"'}, 4);
            fail("accepted bad UTF-8");
        } catch (Json.ParseException expected) {
            assertTrue(expected.getMessage().contains("UTF-8"));
        }
        StringBuilder deep = new StringBuilder();
        for (int i = 0; i < 33; i++) deep.append('[');
        for (int i = 0; i < 33; i++) deep.append(']');
        try {
            Json.parse(deep.toString(), 32);
            fail("accepted 33 levels");
        } catch (Json.ParseException expected) {
            assertTrue(expected.tooDeep);
        }
        Json.parse(deep.substring(1, deep.length() - 1), 32);
        Object round = Json.parse("{\"a\": [1, 2.5, \"x\\n\\u0001\", true, null, {}], \"b\": -0.001}", 4);
        assertTrue(Json.equal(round, Json.parse(Json.write(round), 4)));
        assertTrue(Json.equal(round, Json.parse(Json.write(round, 2), 4)));
    }

    @Test
    public void schemaOnTheClasspathIsTheRepositorysAndUnknownKeywordsAreRefused() throws Exception {
        byte[] repo = Files.readAllBytes(Golden.repo().resolve("mmedge/bundle/manifest.schema.json"));
        byte[] ours = IO.readAll(BundleLoader.class.getResourceAsStream(BundleLoader.SCHEMA_RESOURCE), 1 << 22);
        assertArrayEquals("the build copies mmedge/bundle/manifest.schema.json", repo, ours);
        try {
            new JsonSchema(Json.obj(Json.parse("{\"type\": \"object\", \"dependentRequired\": {}}", 8)));
            fail("unknown keyword accepted");
        } catch (IllegalArgumentException expected) {
            assertTrue(expected.getMessage().contains("dependentRequired"));
        }
        JsonSchema s = new JsonSchema(Json.obj(Json.parse("{\"type\": \"array\", \"uniqueItems\": true, \"items\": "
                + "{\"type\": \"integer\", \"minimum\": 0}}", 8)));
        assertEquals(0, s.validate(Json.parse("[1, 2.0, 3]", 4)).size());
        assertEquals(1, s.validate(Json.parse("[1, 1.0]", 4)).size());
        assertEquals(1, s.validate(Json.parse("[1.5]", 4)).size());
        assertEquals(1, s.validate(Json.parse("[-1]", 4)).size());
    }

    @Test
    public void memberPaths() {
        for (String ok : new String[] {"tokenizer.json", "onnx/fp32/k9_stage0.onnx", "a..b/c", ".hidden"}) {
            assertEquals(ok, null, BundleLoader.memberProblem(ok));
        }
        for (String bad : new String[] {"", "/etc/passwd", "../x", "a/../b", "a/./b", "a//b", "a/", "a\\b", "a\u0000b", ".", ".."}) {
            assertTrue(bad, BundleLoader.memberProblem(bad) != null);
        }
        char[] longName = new char[513];
        Arrays.fill(longName, 'a');
        assertTrue(BundleLoader.memberProblem(new String(longName)) != null);
    }

    @Test
    public void alphaCompositeAndImageChecks() {
        int[] pad = {118, 118, 124};
        for (int src = 0; src < 256; src++) { // alpha 255: Pillow's formula gives the value back
            assertEquals(src, Preprocessor.compositeChannel(src, 37, 255 * 128, 0));
        }
        int[] rgb = Preprocessor.toRgb(new int[] {0x00ffffff, 0xff102030, 0x80ff0000}, pad);
        assertArrayEquals(new int[] {118, 118, 124, 0x10, 0x20, 0x30}, Arrays.copyOf(rgb, 6));
        long coef1 = 128L * 255 * 255 * 128 / (128L * 255 + 255L * 127);
        assertEquals(Preprocessor.compositeChannel(255, 118, coef1, 255 * 128 - coef1), rgb[6]);
        Preprocessor p = new Preprocessor(96, pad, new double[] {0.5, 0.5, 0.5}, new double[] {0.5, 0.5, 0.5}, 1.0 / 255);
        for (int[] size : new int[][] {{7, 100}, {100, 7}, {16385, 8}}) {
            try {
                p.run(new int[size[0] * size[1]], size[0], size[1]);
                fail("accepted " + Arrays.toString(size));
            } catch (ImageException expected) {
                assertTrue(expected.getMessage().contains("px per side"));
            }
        }
        try {
            p.run(new int[10], 8, 8);
            fail("accepted a wrong pixel count");
        } catch (ImageException expected) {
            assertTrue(expected.getMessage().contains("needs 64"));
        }
        float[] grey = p.run(fill(96 * 96, 0xff808080), 96, 96).pixelValues;
        assertEquals((128f / 255f - 0.5f) / 0.5f, grey[0], 0f);
        assertEquals(3 * 96 * 96, grey.length);
    }

    private static int[] fill(int n, int value) {
        int[] out = new int[n];
        Arrays.fill(out, value);
        return out;
    }

    @Test
    public void statisticsAsNumpy() {
        List<Double> ms = new java.util.ArrayList<>();
        for (int i = 1; i <= 100; i++) ms.add((double) i);
        Map<String, Object> s = Stats.summarize(ms);
        assertEquals(100L, s.get("n"));
        assertEquals(50.5, (Double) s.get("p50_ms"), 1e-12);
        assertEquals(90.1, (Double) s.get("p90_ms"), 1e-12);
        assertEquals(99.01, (Double) s.get("p99_ms"), 1e-12);
        assertEquals(29.011491975882016, (Double) s.get("std_ms"), 1e-12); // numpy std(ddof=1)
        assertEquals(0.0, (Double) Stats.summarize(Arrays.asList(3.0)).get("std_ms"), 0);
        try {
            Stats.summarize(new java.util.ArrayList<Double>());
            fail();
        } catch (IllegalArgumentException expected) {
            // no measurements
        }
    }

    @Test
    public void cpuLists() {
        assertEquals(Arrays.asList(4, 5, 6, 7), CpuList.parse("4-7"));
        assertEquals(Arrays.asList(0, 2, 4, 5), CpuList.parse("0,2,4-5"));
        assertEquals("f0", CpuList.hexMask(CpuList.parse("4-7")));
        for (String bad : new String[] {"7-4", "4-", "a", "1;reboot", "", " 1"}) {
            try {
                CpuList.parse(bad);
                fail("accepted " + bad);
            } catch (ConfigException expected) {
                assertTrue(expected.getMessage().contains("CPU list"));
            }
        }
    }
}
