package dev.mmedge.core.testing;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.mmedge.core.BundleException;
import dev.mmedge.core.Json;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.function.Consumer;

/**
 * A fresh copy of a bundle in a temporary folder (file by file, NegativeVectors.copyBase) whose
 * manifest the refusal tests edit, and the check those tests share: a load refused with a reason code.
 */
public final class BundleCopy implements AutoCloseable {
    /** The temporary folder that holds the copy (removed by close). */
    public final Path tmp;
    /** The copy: tmp/NAME, NAME the base bundle's folder name. */
    public final Path dir;
    /** The copy's manifest.json as it was copied. */
    public final String original;

    private BundleCopy(Path tmp, Path dir, String original) {
        this.tmp = tmp;
        this.dir = dir;
        this.original = original;
    }

    /** Copies `base` into a new temporary folder named with `prefix`. */
    public static BundleCopy of(Path base, String prefix) throws IOException {
        Path tmp = Files.createTempDirectory(prefix);
        Path dir = tmp.resolve(base.getFileName().toString());
        NegativeVectors.copyBase(base, dir);
        return new BundleCopy(tmp, dir, new String(Files.readAllBytes(dir.resolve("manifest.json")), StandardCharsets.UTF_8));
    }

    /** Writes the copied manifest, changed by `change`, as the copy's manifest.json (each edit starts from the original). */
    public void edit(Consumer<Map<String, Object>> change) throws IOException {
        Map<String, Object> m;
        try {
            m = Json.obj(Json.parse(original, 64));
        } catch (Json.ParseException exc) {
            throw new IllegalStateException("the copied manifest is not JSON", exc);
        }
        change.accept(m);
        Files.write(dir.resolve("manifest.json"), Json.write(m, 1).getBytes(StandardCharsets.UTF_8));
    }

    @Override
    public void close() throws IOException {
        NegativeVectors.removeTree(tmp);
    }

    /**
     * Runs `load` (which loads and closes an engine) and returns the BundleException it throws, after
     * checking its reason code and that its message stays short; fails when it loads.
     */
    public static BundleException refused(String code, Runnable load) {
        try {
            load.run();
        } catch (BundleException exc) {
            assertEquals("code of '" + exc.getMessage() + "'", code, exc.code());
            assertTrue(exc.getMessage().length() < 1200);
            return exc;
        }
        fail("loaded; expected a refusal with code " + code);
        return null;
    }
}
