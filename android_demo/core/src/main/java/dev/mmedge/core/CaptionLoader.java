package dev.mmedge.core;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Path;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Loads a captioning bundle ({@code "kind": "caption"}) with the checks of docs/bundle-format.md
 * "Loading a bundle", in the same order and with the same reason codes as a classifier bundle
 * ({@link BundleLoader}, whose steps 1-4 and 7-9 it shares), where "Captioning bundles", "What a
 * runtime checks" says: step 4 refuses any other kind ({@code unsupported}); step 5 uses the caption
 * schema ({@code mmedge/caption/caption_manifest.schema.json}); step 6 is {@link CaptionChecks};
 * step 7 names the tokenizer, each artifact's file and external data and each graph's file; step 10
 * checks the tokenizer with its [BOS] and [EOS] ids. {@link CaptionEngine#load} then makes steps 11
 * and 12.
 */
public final class CaptionLoader {
    /** Where the caption schema is on the classpath (the build copies mmedge/caption/caption_manifest.schema.json there). */
    public static final String SCHEMA_RESOURCE = "/dev/mmedge/core/caption_manifest.schema.json";
    public static final String BOS = "[BOS]";
    public static final String EOS = "[EOS]";

    private static JsonSchema cachedSchema;

    /** What a successful load gives. */
    public static final class Loaded {
        public final Path root;
        public final CaptionManifest manifest;
        /** The exact bytes of manifest.json that were checked and parsed. */
        public final byte[] manifestBytes;
        public final WordTokenizer tokenizer;
        /** Verified bytes of the selected files, by bundle-relative path. */
        public final Map<String, byte[]> files;

        Loaded(Path root, CaptionManifest manifest, byte[] manifestBytes, WordTokenizer tokenizer, Map<String, byte[]> files) {
            this.root = root;
            this.manifest = manifest;
            this.manifestBytes = manifestBytes;
            this.tokenizer = tokenizer;
            this.files = files;
        }
    }

    /** Chooses, after steps 1-8, which files to keep the verified bytes of (it may throw to refuse). */
    public interface Selector {
        Collection<String> select(CaptionManifest manifest);
    }

    private CaptionLoader() {
    }

    /** The caption manifest schema from the classpath. */
    public static synchronized JsonSchema schema() {
        if (cachedSchema == null) {
            try (InputStream in = CaptionLoader.class.getResourceAsStream(SCHEMA_RESOURCE)) {
                if (in == null) {
                    throw new IllegalStateException("caption_manifest.schema.json is not on the classpath at " + SCHEMA_RESOURCE
                            + "; the build copies it from mmedge/caption/caption_manifest.schema.json");
                }
                cachedSchema = new JsonSchema(Json.obj(Json.parse(IO.readAll(in, 1 << 22), 64)));
            } catch (IOException | Json.ParseException exc) {
                throw new IllegalStateException("cannot read the caption manifest schema: " + exc.getMessage(), exc);
            }
        }
        return cachedSchema;
    }

    /** Every check of the spec for a captioning bundle (steps 1 to 10), in order. */
    public static Loaded load(Path root, BundleLoader.Options options, Selector selector) {
        BundleLoader.Options o = options == null ? new BundleLoader.Options() : options;
        // steps 1 to 4
        BundleLoader.Read read = BundleLoader.readManifest(root, o);
        String where = read.where;
        Object kind = read.raw.get("kind");
        if (!CaptionManifest.KIND.equals(kind)) {
            throw new BundleException(BundleException.UNSUPPORTED, where + " is not a captioning bundle (its kind is "
                    + (kind == null ? "absent: a classifier bundle" : BundleLoader.shortText(Json.write(kind), 40))
                    + "); load classifier bundles with Engine.load");
        }
        // step 5
        JsonSchema.Violations violations = schema().violations(read.raw);
        if (!violations.problems.isEmpty()) {
            throw new BundleException(violations.pathRuleOnly ? BundleException.PATH : BundleException.SCHEMA, where
                    + " does not match the caption manifest schema (export the bundle again with a matching mmedge):\n  "
                    + join(violations.problems));
        }
        // step 6, then the app's rollback rules
        CaptionManifest manifest = new CaptionManifest(read.raw);
        List<String> problems = CaptionChecks.consistencyProblems(manifest);
        if (!problems.isEmpty()) {
            throw new BundleException(BundleException.INCONSISTENT, where + " is inconsistent:\n  " + join(problems)
                    + "\nThe manifest was edited or is corrupt: export the bundle again");
        }
        BundleLoader.checkRelease(read.raw, o);
        // steps 7 and 8
        BundleLoader.checkPaths(root, manifest.files, manifest.namedPaths());
        // step 9
        Set<String> keep = new HashSet<>();
        if (selector != null) keep.addAll(selector.select(manifest));
        keep.add(manifest.tokenizerFile);
        Map<String, byte[]> files = BundleLoader.verifyFiles(root, manifest.files, manifest.tokenizerFile, keep);
        // step 10
        byte[] tokenizerBytes = files.get(manifest.tokenizerFile);
        if (tokenizerBytes == null) {
            throw new BundleException(BundleException.TOKENIZER, "tokenizer.file '" + manifest.tokenizerFile
                    + "' is not a listed file; export the bundle again");
        }
        WordTokenizer tokenizer;
        try {
            tokenizer = WordTokenizer.fromJson(tokenizerBytes, true);
        } catch (BundleException exc) {
            throw exc.code().equals(BundleException.BUNDLE) ? exc.withCode(BundleException.TOKENIZER) : exc;
        }
        checkTokenizer(tokenizer, manifest);
        return new Loaded(root, manifest, read.bytes, tokenizer, files);
    }

    /** Step 10: the tokenizer file is the manifest's (kind, truncation, ids below vocab_size) with its special ids. */
    static void checkTokenizer(WordTokenizer tokenizer, CaptionManifest m) {
        List<String> problems = BundleLoader.wordTokenizerProblems(tokenizer, m.tokenizerKind, m.continuingSubwordPrefix,
                m.maxInputCharsPerWord, m.maxLength, m.padId, m.unkId, (long) m.vocabSize);
        String[] tokens = {BOS, EOS};
        int[] ids = {m.bosId, m.eosId};
        for (int i = 0; i < tokens.length; i++) {
            Integer got = tokenizer.id(tokens[i]);
            if (got == null || got != ids[i]) {
                problems.add("the tokenizer gives " + tokens[i] + " id " + got + ", the manifest " + ids[i]);
            }
        }
        if (!problems.isEmpty()) {
            throw new BundleException(BundleException.TOKENIZER, "the bundle's tokenizer does not fit its manifest: "
                    + String.join("; ", problems) + "; export the bundle again", null, m.tokenizerFile, null);
        }
    }

    private static String join(List<String> problems) {
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < Math.min(10, problems.size()); i++) {
            if (i > 0) out.append("\n  ");
            out.append(BundleLoader.shortText(problems.get(i), 200));
        }
        return out.toString();
    }
}
