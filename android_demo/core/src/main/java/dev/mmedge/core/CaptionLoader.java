package dev.mmedge.core;

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

    /** What a successful load gives (root, manifest bytes, tokenizer and verified files: {@link BundleLoader.Checked}). */
    public static final class Loaded extends BundleLoader.Checked<CaptionManifest> {
        Loaded(Path root, CaptionManifest manifest, byte[] manifestBytes, WordTokenizer tokenizer, Map<String, byte[]> files) {
            super(root, manifest, manifest.files, manifestBytes, tokenizer, files);
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
            cachedSchema = BundleLoader.readSchema(SCHEMA_RESOURCE, "mmedge/caption/caption_manifest.schema.json",
                    "caption manifest schema");
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
                    + "); load classifier bundles with Engine.load" + (VLMManifest.KIND.equals(kind)
                    ? " and generative VLM bundles with VLMEngine.load" : ""));
        }
        // step 5
        BundleLoader.checkSchema(schema(), read.raw, where, "caption manifest schema");
        // step 6, then the app's rollback rules
        CaptionManifest manifest = new CaptionManifest(read.raw);
        BundleLoader.checkConsistent(CaptionChecks.consistencyProblems(manifest), where);
        BundleLoader.checkRelease(read.raw, o);
        // steps 7 and 8
        BundleLoader.checkPaths(root, manifest.files, manifest.namedPaths());
        // step 9
        Set<String> keep = new HashSet<>();
        if (selector != null) keep.addAll(selector.select(manifest));
        keep.add(manifest.tokenizerFile);
        Map<String, byte[]> files = BundleLoader.verifyFiles(root, manifest.files, manifest.tokenizerFile, keep);
        // step 10
        byte[] tokenizerBytes = BundleLoader.tokenizerBytes(files, manifest.tokenizerFile);
        WordTokenizer tokenizer;
        try {
            tokenizer = WordTokenizer.fromJson(tokenizerBytes, true);
        } catch (BundleException exc) {
            throw BundleLoader.tokenizerRefusal(exc);
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
}
