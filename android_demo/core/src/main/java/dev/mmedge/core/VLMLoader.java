package dev.mmedge.core;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Loads a generative VLM bundle ({@code "kind": "vlm"}) with the checks of docs/bundle-format.md
 * "Loading a bundle", in the same order and with the same reason codes as the other kinds
 * ({@link BundleLoader}, whose steps 1-4 and 7-9 it shares; mmedge.bundle.manifest.load_bundle_manifest
 * and mmedge.runtime.vlm_engine in Python), where "Generative VLM bundles", "What a runtime checks"
 * says: step 4 refuses any other kind ({@code unsupported}); step 5 uses the VLM schema
 * ({@code mmedge/adapt/vlm_manifest.schema.json}); step 6 is {@link VLMChecks}, then the app's
 * rollback rules; step 7 names the tokenizer, each artifact's file and external data and each graph's
 * file; step 10 reads the tokenizer file as untrusted input ({@link HFTokenizer}: code
 * {@code tokenizer}, or {@code unsupported} for components this runtime does not implement) and
 * checks that it fits the manifest. {@link VLMEngine#load} then makes steps 11 and 12.
 */
public final class VLMLoader {
    /** Where the VLM schema is on the classpath (the build copies mmedge/adapt/vlm_manifest.schema.json there). */
    public static final String SCHEMA_RESOURCE = "/dev/mmedge/core/vlm_manifest.schema.json";

    private static JsonSchema cachedSchema;

    /**
     * What a successful load gives: root, manifest bytes, verified files ({@link BundleLoader.Checked},
     * whose word-level {@code tokenizer} is null here) and the Hugging Face tokenizer.
     */
    public static final class Loaded extends BundleLoader.Checked<VLMManifest> {
        /** The bundle's tokenizer.json, checked against the manifest. */
        public final HFTokenizer hfTokenizer;

        Loaded(Path root, VLMManifest manifest, byte[] manifestBytes, HFTokenizer tokenizer, Map<String, byte[]> files) {
            super(root, manifest, manifest.files, manifestBytes, null, files);
            this.hfTokenizer = tokenizer;
        }
    }

    /** Chooses, after steps 1-8, which files to keep the verified bytes of (it may throw to refuse). */
    public interface Selector {
        Collection<String> select(VLMManifest manifest);
    }

    private VLMLoader() {
    }

    /** The VLM manifest schema from the classpath. */
    public static synchronized JsonSchema schema() {
        if (cachedSchema == null) {
            cachedSchema = BundleLoader.readSchema(SCHEMA_RESOURCE, "mmedge/adapt/vlm_manifest.schema.json", "vlm manifest schema");
        }
        return cachedSchema;
    }

    /** Every check of the spec for a generative VLM bundle (steps 1 to 10), in order. */
    public static Loaded load(Path root, BundleLoader.Options options, Selector selector) {
        BundleLoader.Options o = options == null ? new BundleLoader.Options() : options;
        // steps 1 to 4
        BundleLoader.Read read = BundleLoader.readManifest(root, o);
        String where = read.where;
        Object kind = read.raw.get("kind");
        if (!VLMManifest.KIND.equals(kind)) {
            throw new BundleException(BundleException.UNSUPPORTED, where + " is not a generative VLM bundle (its kind is "
                    + (kind == null ? "absent: a classifier bundle" : BundleLoader.shortText(Json.write(kind), 40))
                    + "); load classifier bundles with Engine.load and captioning bundles with CaptionEngine.load");
        }
        // step 5
        BundleLoader.checkSchema(schema(), read.raw, where, "vlm manifest schema");
        // step 6, then the app's rollback rules
        VLMManifest manifest = new VLMManifest(read.raw);
        BundleLoader.checkConsistent(VLMChecks.consistencyProblems(manifest), where);
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
        HFTokenizer tokenizer = HFTokenizer.fromJson(tokenizerBytes, manifest.tokenizerFile);
        checkTokenizer(tokenizer, manifest);
        return new Loaded(root, manifest, read.bytes, tokenizer, files);
    }

    /** The prompt's ids: the chat template's text around the user's, no special tokens added. */
    static List<Integer> encodePrompt(HFTokenizer tokenizer, VLMManifest m, String text) {
        return tokenizer.encode(m.promptBefore + text + m.promptAfter);
    }

    /**
     * Step 10: the tokenizer fits the manifest: the prompt template (around the text "a") encodes to one
     * contiguous block of layout.num_image_tokens image tokens, and every id it gives is below the vocabulary size.
     */
    static void checkTokenizer(HFTokenizer tokenizer, VLMManifest m) {
        List<Integer> ids = encodePrompt(tokenizer, m, "a");
        List<Integer> at = new ArrayList<>();
        int top = -1;
        for (int i = 0; i < ids.size(); i++) {
            if (ids.get(i) == m.imageTokenId) at.add(i);
            top = Math.max(top, ids.get(i));
        }
        List<String> problems = new ArrayList<>();
        if (at.size() != m.numImageTokens || (!at.isEmpty() && at.get(at.size() - 1) - at.get(0) != at.size() - 1)) {
            problems.add("the prompt template holds " + at.size() + " image tokens, not one block of " + m.numImageTokens);
        }
        if (top >= m.vocabSize) problems.add("its ids go past the model's vocabulary of " + m.vocabSize);
        if (!problems.isEmpty()) {
            throw new BundleException(BundleException.TOKENIZER, "the bundle's tokenizer does not fit its manifest: "
                    + String.join("; ", problems), null, m.tokenizerFile, null);
        }
    }
}
