package dev.mmedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.mmedge.core.testing.Golden;
import dev.mmedge.core.testing.NegativeVectors;
import dev.mmedge.core.testing.ReplayStageRunner;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import java.util.regex.Pattern;
import org.junit.After;
import org.junit.Before;
import org.junit.Test;

/** Tampered and hostile bundles are refused with a typed error, before any stage is opened. */
public class TamperTest {
    private Path tmp;
    private Path dir;
    private String original;

    @Before
    public void copy() throws IOException {
        tmp = Files.createTempDirectory("mmedge-java-");
        dir = tmp.resolve("bundle.mmedge");
        Path src = Golden.bundle();
        Files.walkFileTree(src, new SimpleFileVisitor<Path>() {
            @Override
            public FileVisitResult preVisitDirectory(Path d, BasicFileAttributes a) throws IOException {
                Files.createDirectories(dir.resolve(src.relativize(d).toString()));
                return FileVisitResult.CONTINUE;
            }

            @Override
            public FileVisitResult visitFile(Path f, BasicFileAttributes a) throws IOException {
                Files.copy(f, dir.resolve(src.relativize(f).toString()), StandardCopyOption.COPY_ATTRIBUTES);
                return FileVisitResult.CONTINUE;
            }
        });
        original = new String(Files.readAllBytes(dir.resolve("manifest.json")), StandardCharsets.UTF_8);
    }

    @After
    public void remove() throws IOException {
        NegativeVectors.removeTree(tmp);
    }

    private ReplayStageRunner.Factory factory() {
        return new ReplayStageRunner.Factory(Golden.queries(), false);
    }

    private Engine load() {
        return Engine.load(dir, factory(), new Engine.Options());
    }

    /** Refused with reason code `code` and a message matching `pattern`, before any stage was opened. */
    private void refused(String code, String pattern) {
        ReplayStageRunner.Factory f = factory();
        try {
            Engine.load(dir, f, new Engine.Options()).close();
            fail("loaded; expected a BundleException matching " + pattern);
        } catch (BundleException exc) {
            assertEquals("code of '" + exc.getMessage() + "'", code, exc.code());
            assertTrue("message '" + exc.getMessage() + "' should match " + pattern,
                    Pattern.compile(pattern, Pattern.DOTALL).matcher(exc.getMessage()).find());
            assertTrue("short message", exc.getMessage().length() < 1200);
        }
        assertEquals("no stage was opened", null, f.last);
    }

    private String stageFile() {
        Manifest m = new Manifest(BundleLoader.parseManifest(original.getBytes(StandardCharsets.UTF_8), "m"));
        return m.artifacts.get(0).stages.get(m.keepRatios.get(0).stages.get(1)).file;
    }

    private void write(String rel, byte[] data) throws IOException {
        Files.write(dir.resolve(rel), data);
    }

    private void writeManifest(String text) throws IOException {
        write("manifest.json", text.getBytes(StandardCharsets.UTF_8));
    }

    /** Rewrites manifest.json after editing its JSON tree. */
    private void edit(Consumer<Map<String, Object>> change) throws Exception {
        Map<String, Object> m = Json.obj(Json.parse(original, 64));
        change.accept(m);
        writeManifest(Json.write(m, 1));
    }

    @Test
    public void untouchedCopyLoadsAndUnknownOptionalSectionsAreIgnored() throws Exception {
        load().close();
        edit(m -> m.put("modality_pruning_from_the_future", Collections.singletonMap("anything", 1L)));
        load().close();
    }

    @Test
    public void flippedTruncatedGrownMissingStageFile() throws Exception {
        String rel = stageFile();
        byte[] bytes = Files.readAllBytes(dir.resolve(rel));
        byte[] flipped = bytes.clone();
        flipped[flipped.length / 2] ^= 1;
        write(rel, flipped);
        refused("hash-mismatch", "hash mismatch");
        write(rel, java.util.Arrays.copyOf(bytes, 100));
        refused("size-mismatch", "size mismatch");
        byte[] grown = java.util.Arrays.copyOf(bytes, bytes.length + 1);
        write(rel, grown);
        refused("size-mismatch", "size mismatch");
        Files.delete(dir.resolve(rel));
        refused("file-missing", "missing");
        try {
            load();
            fail();
        } catch (BundleException exc) {
            assertEquals(BundleException.Reason.MISSING, exc.reason());
            assertEquals(rel, exc.path());
        }
    }

    @Test
    public void editedManifestWithoutASignatureLoads() throws Exception {
        edit(m -> {
            List<Object> labels = Json.arr(m.get("labels"));
            labels.add(labels.remove(0));
        });
        try (Engine e = load()) {
            assertNotEquals(Json.arr(Json.obj(Json.parse(original, 64)).get("labels")).get(0), e.labels.get(0));
        }
    }

    private static Map<String, Object> fakeEntry() {
        Map<String, Object> e = new java.util.LinkedHashMap<>();
        e.put("sha256", new String(new char[64]).replace('\0', '0'));
        e.put("bytes", 1L);
        return e;
    }

    @Test
    public void pathTraversalAbsoluteNulAndListedManifest() throws Exception {
        String rel = stageFile();
        edit(m -> {
            for (Object a : Json.arr(m.get("artifacts"))) {
                for (Object s : Json.obj(Json.obj(a).get("stages")).values()) {
                    if (rel.equals(Json.obj(s).get("file"))) Json.obj(s).put("file", "../../" + rel);
                }
            }
        });
        refused("path", "relative path|inside the bundle");
        String[] bad = {"onnx/../../../etc/passwd", "/etc/passwd", "onnx//x", "./x", "onnx/a\u0000b", "a\\b"};
        for (String name : bad) {
            edit(m -> Json.obj(m.get("files")).put(name, fakeEntry()));
            refused("path", "relative path|inside the bundle|not normalised|absolute|NUL|backslash");
        }
        edit(m -> {
            Json.obj(m.get("tokenizer")).put("file", "/etc/passwd");
        });
        refused("path", "relative path|absolute");
        edit(m -> Json.obj(m.get("files")).put("manifest.sig", fakeEntry()));
        refused("path", "may not list");
    }

    @Test
    public void symbolicLinksAndFifosAreRefused() throws Exception {
        Path elsewhere = tmp.resolve("tokenizer-elsewhere.json");
        Files.copy(dir.resolve("tokenizer.json"), elsewhere);
        Files.delete(dir.resolve("tokenizer.json"));
        Files.createSymbolicLink(dir.resolve("tokenizer.json"), elsewhere);
        refused("file-not-regular", "link");
        Files.delete(dir.resolve("tokenizer.json"));
        Files.copy(elsewhere, dir.resolve("tokenizer.json"));
        load().close();

        String rel = stageFile();
        Path folder = dir.resolve(rel).getParent();
        Path moved = tmp.resolve("moved");
        Files.move(folder, moved);
        Files.createSymbolicLink(folder, moved);
        refused("file-not-regular", "link");
        Files.delete(folder);
        Files.move(moved, folder);

        Files.delete(dir.resolve(rel));
        Process p = new ProcessBuilder("mkfifo", dir.resolve(rel).toString()).inheritIO().start();
        assertEquals(0, p.waitFor());
        refused("file-not-regular", "not regular");
    }

    @Test
    public void oversizedManifest() throws Exception {
        StringBuilder big = new StringBuilder(original);
        char[] spaces = new char[8 * 1024 * 1024];
        java.util.Arrays.fill(spaces, ' ');
        big.append(spaces);
        writeManifest(big.toString());
        refused("manifest-too-large", "over 8388608 bytes");
    }

    @Test
    public void deepNesting() throws Exception {
        edit(m -> {
            Object v = 1L;
            for (int i = 0; i < 31; i++) v = new ArrayList<>(Collections.singletonList(v)); // 3 + 31 = 34 levels
            Json.obj(Json.obj(m.get("model")).get("config")).put("deep", v);
        });
        refused("json", "nests deeper than 32");
        StringBuilder deep = new StringBuilder();
        for (int i = 0; i < 1_000_000; i++) deep.append('[');
        for (int i = 0; i < 1_000_000; i++) deep.append(']');
        writeManifest(original.replace("\"model\": {", "\"x\": " + deep + ", \"model\": {"));
        refused("json", "nests deeper than 32");
        edit(m -> {
            Object v = 1L;
            for (int i = 0; i < 29; i++) v = new ArrayList<>(Collections.singletonList(v)); // exactly 32 levels
            Json.obj(Json.obj(m.get("model")).get("config")).put("deep", v);
        });
        load().close();
    }

    @Test
    public void schemaVersion() throws Exception {
        assertTrue(original.contains("\"schema_version\": 1,"));
        for (String bad : new String[] {"1.0", "1e0", "\"1\"", "2", "true", "0"}) {
            writeManifest(original.replace("\"schema_version\": 1,", "\"schema_version\": " + bad + ","));
            refused("schema-version", "schema_version");
        }
        writeManifest(original.replace("\"schema_version\": 1,", ""));
        refused("schema-version", "schema_version");
    }

    @Test
    public void notJsonNotUtf8NotAnObjectBomMissing() throws Exception {
        writeManifest("{\"schema_version\": 1,");
        refused("json", "not valid JSON");
        byte[] bytes = original.getBytes(StandardCharsets.UTF_8);
        byte[] broken = new byte[bytes.length + 2];
        System.arraycopy(bytes, 0, broken, 0, 10);
        broken[10] = (byte) 0xff;
        broken[11] = (byte) 0xfe;
        System.arraycopy(bytes, 10, broken, 12, bytes.length - 10);
        write("manifest.json", broken);
        refused("json", "UTF-8");
        writeManifest("[1]");
        refused("json", "object");
        writeManifest("\ufeff" + original);
        refused("json", "not valid JSON");
        writeManifest(original.replace("\"schema_version\": 1,", "\"schema_version\": 1, \"x\": NaN,"));
        refused("json", "not valid JSON");
        Files.delete(dir.resolve("manifest.json"));
        refused("manifest-missing", "no manifest.json");
    }

    @Test
    public void schemaAndConsistencyViolations() throws Exception {
        List<Object[]> cases = new ArrayList<>();
        cases.add(new Object[] {(Consumer<Map<String, Object>>) m -> {
            List<Object> labels = new ArrayList<>();
            for (int i = 0; i < 65537; i++) labels.add("l" + i);
            m.put("labels", labels);
        }, "schema", "schema"});
        cases.add(new Object[] {(Consumer<Map<String, Object>>) m -> Json.obj(m.get("preprocessing")).put("image_size", 5000L), "schema", "schema"});
        cases.add(new Object[] {(Consumer<Map<String, Object>>) m -> m.remove("tokenizer"), "schema", "schema"});
        cases.add(new Object[] {(Consumer<Map<String, Object>>) m -> Json.obj(Json.obj(m.get("files")).values().iterator().next())
                .put("sha256", "ABC"), "schema", "schema"});
        cases.add(new Object[] {(Consumer<Map<String, Object>>) m -> Json.obj(m.get("thresholds")).put("keep_ratio", 0.3), "inconsistent", "inconsistent"});
        cases.add(new Object[] {(Consumer<Map<String, Object>>) m -> Collections.reverse(Json.arr(m.get("exit_layers"))), "inconsistent", "inconsistent"});
        cases.add(new Object[] {(Consumer<Map<String, Object>>) m -> {
            Map<String, Object> tok = Json.obj(m.get("tokenizer"));
            tok.put("unk_id", tok.get("pad_id"));
        }, "inconsistent", "inconsistent"});
        cases.add(new Object[] {(Consumer<Map<String, Object>>) m -> Collections.reverse(
                Json.arr(Json.obj(Json.arr(m.get("keep_ratios")).get(0)).get("stages"))), "inconsistent", "inconsistent"});
        cases.add(new Object[] {(Consumer<Map<String, Object>>) m -> Json.arr(
                Json.obj(Json.arr(m.get("keep_ratios")).get(0)).get("stages")).set(1, "constructor"), "inconsistent", "inconsistent"});
        cases.add(new Object[] {(Consumer<Map<String, Object>>) m -> {
            List<Object> labels = Json.arr(m.get("labels"));
            labels.remove(labels.size() - 1);
        }, "inconsistent", "inconsistent"});
        cases.add(new Object[] {(Consumer<Map<String, Object>>) m -> Json.obj(m.get("tokenizer")).put("max_length", 23L), "inconsistent", "inconsistent"});
        cases.add(new Object[] {(Consumer<Map<String, Object>>) m -> Json.obj(m.get("preprocessing")).put("pad_color",
                new ArrayList<Object>(java.util.Arrays.asList(0L, 0L, 0L))), "pad_color.*fixes", "inconsistent"});
        cases.add(new Object[] {(Consumer<Map<String, Object>>) m -> Json.obj(m.get("tokenizer")).put("split_regex", "\\S+"),
                "split_regex.*fixes", "inconsistent"});
        cases.add(new Object[] {(Consumer<Map<String, Object>>) m -> Json.obj(Json.obj(m.get("model")).get("config"))
                .put("vocab_size", 3L), "tokenizer does not fit", "tokenizer"});
        for (Object[] c : cases) {
            @SuppressWarnings("unchecked")
            Consumer<Map<String, Object>> change = (Consumer<Map<String, Object>>) c[0];
            edit(change);
            refused((String) c[2], (String) c[1]);
        }
    }

    /** A bundle whose tokenizer.json is the golden WordPiece one, listed with its size and SHA-256. */
    private void useWordPieceTokenizer(Consumer<Map<String, Object>> tokenizerSection) throws Exception {
        Path wordPiece = Golden.repo().resolve((String) Golden.json(Golden.golden().resolve("tokenizer-wordpiece.json"))
                .get("tokenizer"));
        byte[] bytes = Files.readAllBytes(wordPiece);
        write("tokenizer.json", bytes);
        edit(m -> {
            Map<String, Object> entry = Json.obj(Json.obj(m.get("files")).get("tokenizer.json"));
            entry.put("sha256", IO.sha256Hex(bytes));
            entry.put("bytes", (long) bytes.length);
            Json.obj(Json.obj(m.get("model")).get("config")).put("vocab_size", 150L);
            tokenizerSection.accept(Json.obj(m.get("tokenizer")));
        });
    }

    private static Consumer<Map<String, Object>> wordPiece(Object prefix, Object longest) {
        return tok -> {
            tok.put("kind", "wordpiece");
            tok.put("continuing_subword_prefix", prefix);
            tok.put("max_input_chars_per_word", longest);
        };
    }

    @Test
    public void wordPieceBundle() throws Exception {
        // the shipped word-level bundle declared wordpiece
        edit(m -> wordPiece("##", 100L).accept(Json.obj(m.get("tokenizer"))));
        refused("tokenizer", "tokenizer does not fit.*WordLevel model.*tokenizer.kind is 'wordpiece'.*export the bundle again");
        edit(m -> Json.obj(m.get("tokenizer")).put("kind", "word"));
        load().close();
        edit(m -> Json.obj(m.get("tokenizer")).put("kind", "bpe"));
        refused("schema", "schema");
        edit(m -> Json.obj(m.get("tokenizer")).put("kind", "wordpiece"));
        refused("schema", "schema");
        edit(m -> wordPiece("", 100L).accept(Json.obj(m.get("tokenizer"))));
        refused("schema", "schema");
        edit(m -> wordPiece("#################", 100L).accept(Json.obj(m.get("tokenizer"))));
        refused("schema", "schema");
        edit(m -> wordPiece("##", 0L).accept(Json.obj(m.get("tokenizer"))));
        refused("schema", "schema");
        edit(m -> wordPiece("##", 1025L).accept(Json.obj(m.get("tokenizer"))));
        refused("schema", "schema");

        // a WordPiece tokenizer.json: loads when the manifest says so with the same settings
        useWordPieceTokenizer(wordPiece("##", 100L));
        try (Engine e = load()) {
            assertTrue(e.tokenizer instanceof WordPieceTokenizer);
            assertEquals("wordpiece", e.tokenizer.kind());
            assertEquals(java.util.Arrays.asList("ho", "##l", "##d", "##e", "##r"), e.tokenizer.encode("holder").tokens);
        }
        useWordPieceTokenizer(tok -> { });
        refused("tokenizer", "tokenizer does not fit.*WordPiece model.*tokenizer.kind is 'word'.*export the bundle again");
        useWordPieceTokenizer(tok -> tok.put("kind", "word"));
        refused("tokenizer", "tokenizer does not fit.*WordPiece model.*tokenizer.kind is 'word'");
        useWordPieceTokenizer(wordPiece("@@", 100L));
        refused("tokenizer", "tokenizer does not fit.*continuing_subword_prefix '##' vs the manifest's '@@'.*export the bundle again");
        useWordPieceTokenizer(wordPiece("##", 99L));
        refused("tokenizer", "tokenizer does not fit.*max_input_chars_per_word 100 vs the manifest's 99.*export the bundle again");
        useWordPieceTokenizer(wordPiece("##", 100L).andThen(tok -> tok.put("max_length", 23L)));
        refused("inconsistent", "inconsistent|max_length");
    }

    @Test
    public void loadOptions() throws Exception {
        Engine.Options o = new Engine.Options();
        o.precision = "fp16";
        try {
            Engine.load(dir, factory(), o);
            fail();
        } catch (ConfigException expected) {
            assertTrue(expected.getMessage().contains("fp16"));
        }
        o = new Engine.Options();
        o.keepRatio = 0.33;
        try {
            Engine.load(dir, factory(), o);
            fail();
        } catch (ConfigException expected) {
            assertTrue(expected.getMessage().contains("0.33"));
        }
        o = new Engine.Options();
        o.precision = "int8";
        try {
            Engine.load(dir, factory(), o);
            fail();
        } catch (BundleException expected) {
            assertTrue(expected.getMessage(), expected.getMessage().contains("no onnxruntime int8 artifact"));
        }
    }

    @Test
    public void onlyManifestIsReadBeforeTheChecksPass() throws Exception {
        // an inconsistent manifest with every other file removed: refused for the manifest, not for missing files
        edit(m -> Json.obj(m.get("thresholds")).put("keep_ratio", 0.3));
        Files.delete(dir.resolve("tokenizer.json"));
        refused("inconsistent", "inconsistent");
    }
}
