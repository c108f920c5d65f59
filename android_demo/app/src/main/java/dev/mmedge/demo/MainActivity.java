package dev.mmedge.demo;

import android.app.Activity;
import android.content.Intent;
import android.content.SharedPreferences;
import android.graphics.Bitmap;
import android.graphics.Canvas;
import android.graphics.Color;
import android.graphics.Paint;
import android.net.Uri;
import android.os.Bundle;
import android.provider.MediaStore;
import android.widget.Button;
import android.widget.EditText;
import android.widget.ImageView;
import android.widget.LinearLayout;
import android.widget.ScrollView;
import android.widget.TextView;

import dev.mmedge.core.BundleException;
import dev.mmedge.core.BundleLoader;
import dev.mmedge.core.Caption;
import dev.mmedge.core.CaptionEngine;
import dev.mmedge.core.CaptionManifest;
import dev.mmedge.core.Controller;
import dev.mmedge.core.Engine;
import dev.mmedge.core.Generation;
import dev.mmedge.core.HFTokenizer;
import dev.mmedge.core.IO;
import dev.mmedge.core.ImageFiles;
import dev.mmedge.core.MMEdgeException;
import dev.mmedge.core.Manifest;
import dev.mmedge.core.Preprocessor;
import dev.mmedge.core.VLMEngine;
import dev.mmedge.core.VLMManifest;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * The demo screen: pick or take a photo, type a question; shows the answer, the exit taken, the
 * visual tokens the prefilter kept drawn over the model's view of the image, and per-stage latency.
 * With a captioning bundle (kind "caption") it captions the photo instead: the caption, then word
 * by word the exit each word took (stage and decoder layer) and its confidence, and the time of
 * each graph. With a generative VLM bundle (kind "vlm") it generates text about the photo: an empty
 * question captions it (VLMEngine.caption, task "caption"), a question is answered
 * (VLMEngine.generate with task "answer"); it shows the generated text, then token by token its text
 * piece (the bundle's tokenizer), the exit it took (stage and decoder layer) and its confidence, the
 * time to first token, ms per decoded token, the total, the visual tokens kept of the total, the
 * settings that applied (VLMEngine.settings(task)) and the time of each graph. An adapted NLVR2 bundle
 * (two images per query) takes the photo picked before the last one as the left image and the last
 * one as the right; an adapted retrieval bundle (head "match-score") also shows the match probability
 * of the text. The bundle is the first NAME.mmedge directory found in the app's external files
 * ("bundles/", see README.md) that loads; ONNX Runtime when it has an onnxruntime artifact, else
 * ExecuTorch. The generative part has been type-checked only, not run on a phone.
 */
public final class MainActivity extends Activity {
    private static final int PICK = 1;
    private static final int CAPTURE = 2;
    private static final String KEY_ASSET = "bundle-key.pub.pem";
    private static final String PREF_SEQUENCE = "highest_release_sequence";

    private final ExecutorService worker = Executors.newSingleThreadExecutor();
    private Engine engine;
    private CaptionEngine captioner;
    private VLMEngine generator;
    private Images.Argb image;
    /** The photo picked before `image`: the left image of a two-image (NLVR2) bundle. */
    private Images.Argb previous;
    private TextView status;
    private EditText question;
    private ImageView view;
    private TextView result;
    private Button ask;

    @Override
    protected void onCreate(Bundle savedInstanceState) {
        super.onCreate(savedInstanceState);
        LinearLayout column = new LinearLayout(this);
        column.setOrientation(LinearLayout.VERTICAL);
        int pad = (int) (12 * getResources().getDisplayMetrics().density);
        column.setPadding(pad, pad, pad, pad);
        status = new TextView(this);
        column.addView(status);
        LinearLayout buttons = new LinearLayout(this);
        Button pick = new Button(this);
        pick.setText("Pick photo");
        pick.setOnClickListener(v -> startActivityForResult(
                new Intent(Intent.ACTION_GET_CONTENT).setType("image/*").addCategory(Intent.CATEGORY_OPENABLE), PICK));
        Button take = new Button(this);
        take.setText("Take photo");
        take.setOnClickListener(v -> startActivityForResult(new Intent(MediaStore.ACTION_IMAGE_CAPTURE), CAPTURE));
        buttons.addView(pick);
        buttons.addView(take);
        column.addView(buttons);
        question = new EditText(this);
        question.setHint("is there a red circle ?");
        question.setSingleLine(true);
        column.addView(question);
        ask = new Button(this);
        ask.setText("Ask");
        ask.setOnClickListener(v -> {
            if (generator != null) generate();
            else if (captioner != null) caption();
            else ask();
        });
        column.addView(ask);
        view = new ImageView(this);
        view.setAdjustViewBounds(true);
        view.setScaleType(ImageView.ScaleType.FIT_CENTER);
        column.addView(view, new LinearLayout.LayoutParams(LinearLayout.LayoutParams.MATCH_PARENT, (int) (320 * getResources()
                .getDisplayMetrics().density)));
        result = new TextView(this);
        result.setTextIsSelectable(true);
        column.addView(result);
        ScrollView scroll = new ScrollView(this);
        scroll.addView(column);
        setContentView(scroll);
        status.setText("loading a bundle…");
        worker.execute(this::loadEngine);
    }

    private List<File> bundleDirs() {
        List<File> out = new ArrayList<>();
        File own = getExternalFilesDir("bundles");
        for (File root : new File[] {own}) {
            File[] found = root == null ? null : root.listFiles((d, name) -> name.endsWith(".mmedge"));
            if (found != null) for (File f : found) out.add(f);
        }
        return out;
    }

    /**
     * The app's bundle key, when it ships one (assets/bundle-key.pub.pem, as `mmedge sign --new-key`
     * writes it), else null. With a key, a bundle must carry a valid signature by it, and rollback
     * protection applies: the highest release.sequence accepted so far is stored and passed as the
     * minimum next time, so an older signed bundle is refused (code rollback).
     */
    private byte[] shippedKey() {
        try (InputStream in = getAssets().open(KEY_ASSET)) {
            return IO.readAll(in, 1 << 16);
        } catch (IOException none) {
            return null;
        }
    }

    private Engine.Options loadOptions(byte[] key, SharedPreferences prefs) {
        Engine.Options o = new Engine.Options();
        if (key == null) return o;
        o.verifyKey = key;
        long highest = prefs.getLong(PREF_SEQUENCE, -1);
        if (highest >= 0) o.minSequence = highest;
        return o;
    }

    private CaptionEngine.Options captionOptions(byte[] key, SharedPreferences prefs) {
        CaptionEngine.Options o = new CaptionEngine.Options();
        Engine.Options e = loadOptions(key, prefs);
        o.verifyKey = e.verifyKey;
        o.minSequence = e.minSequence;
        return o;
    }

    private VLMEngine.Options vlmOptions(byte[] key, SharedPreferences prefs) {
        VLMEngine.Options o = new VLMEngine.Options();
        Engine.Options e = loadOptions(key, prefs);
        o.verifyKey = e.verifyKey;
        o.minSequence = e.minSequence;
        return o;
    }

    private static void remember(Long sequence, byte[] key, SharedPreferences prefs) {
        if (key != null && sequence != null && sequence > prefs.getLong(PREF_SEQUENCE, -1)) {
            prefs.edit().putLong(PREF_SEQUENCE, sequence).apply();
        }
    }

    private void loadEngine() {
        StringBuilder tried = new StringBuilder();
        byte[] key = shippedKey();
        SharedPreferences prefs = getSharedPreferences("mmedge", MODE_PRIVATE);
        for (File dir : bundleDirs()) {
            Path root = Paths.get(dir.getAbsolutePath());
            String kind;
            try {
                kind = BundleLoader.kind(root); // which engine; that engine then makes every check
            } catch (MMEdgeException exc) {
                tried.append("\n").append(dir.getName()).append(": ").append(describe(exc));
                continue;
            }
            for (String backend : new String[] {"onnxruntime", "executorch"}) {
                try {
                    if (CaptionManifest.KIND.equals(kind)) {
                        CaptionEngine c = CaptionEngine.load(root, Backends.captionFactory(backend), captionOptions(key, prefs));
                        remember(c.releaseSequence(), key, prefs);
                        captioner = c;
                        runOnUiThread(() -> {
                            question.setVisibility(android.view.View.GONE);
                            ask.setText("Caption");
                            status.setText(String.format(Locale.ROOT, "%s (captions) on %s (%s %s), keep ratio %s, policy %s, kv %s",
                                    c.manifest.name, c.backend(), c.artifact.format, c.artifact.precision, c.keepRatio(), c.policy(),
                                    c.kv()));
                        });
                        return;
                    }
                    if (VLMManifest.KIND.equals(kind)) {
                        VLMEngine g = VLMEngine.load(root, Backends.vlmFactory(backend), vlmOptions(key, prefs));
                        remember(g.releaseSequence(), key, prefs);
                        generator = g;
                        runOnUiThread(() -> {
                            question.setHint("empty: a caption; or ask about the photo");
                            ask.setText("Generate");
                            status.setText(String.format(Locale.ROOT, "%s (generates) on %s (%s %s), %d visual tokens, %d exits, "
                                            + "kv %s\nempty question: a caption (task caption); a question: a short answer (task answer)",
                                    g.manifest.name, g.backend(), g.artifact.format, g.artifact.precision, g.manifest.numImageTokens,
                                    g.numStages(), g.kv()));
                        });
                        return;
                    }
                    Engine e = Engine.load(root, Backends.factory(backend), loadOptions(key, prefs));
                    remember(e.releaseSequence(), key, prefs);
                    engine = e;
                    String how = e.numImages == 2 ? "\ntwo images per query: pick the left photo, then the right one"
                            : Manifest.MATCH_SCORE.equals(e.head) ? "\nimage-text match: type a caption to score" : "";
                    runOnUiThread(() -> status.setText(String.format(Locale.ROOT, "%s on %s (%s %s), keep ratio %s, policy %s%s",
                            e.manifest.name, e.backend(), e.artifact.format, e.artifact.precision, e.keepRatio(), e.policy(), how)));
                    return;
                } catch (MMEdgeException | UnsatisfiedLinkError exc) {
                    tried.append("\n").append(dir.getName()).append(" (").append(backend).append("): ").append(describe(exc));
                }
            }
        }
        String message = "no usable bundle. Push one with\n  adb push NAME.mmedge " + getExternalFilesDir("bundles") + "/" + tried;
        runOnUiThread(() -> status.setText(message));
    }

    private static String describe(Throwable exc) {
        return (exc instanceof BundleException ? "[" + ((BundleException) exc).code() + "] " : "") + exc.getMessage();
    }

    @Override
    protected void onActivityResult(int requestCode, int resultCode, Intent data) {
        super.onActivityResult(requestCode, resultCode, data);
        if (resultCode != RESULT_OK || data == null) return;
        try {
            Images.Argb picked = null;
            if (requestCode == PICK && data.getData() != null) {
                Uri uri = data.getData();
                try (InputStream in = getContentResolver().openInputStream(uri)) {
                    picked = Images.decode(IO.readAll(in, 64 << 20));
                }
            } else if (requestCode == CAPTURE && data.getExtras() != null) {
                picked = Images.pixels((Bitmap) data.getExtras().get("data")); // the camera app's preview-size image
            }
            if (picked == null) return;
            previous = image;
            image = picked;
            Bitmap shown = Bitmap.createBitmap(image.pixels, image.width, image.height, Bitmap.Config.ARGB_8888);
            view.setImageBitmap(shown);
            result.setText(image.width + " x " + image.height + " px");
        } catch (IOException | MMEdgeException exc) {
            result.setText("cannot read the image: " + exc.getMessage());
        }
    }

    private void ask() {
        Engine e = engine;
        Images.Argb im = image;
        Images.Argb left = previous;
        String text = question.getText().toString();
        if (e == null || im == null) {
            result.setText(e == null ? "no bundle loaded yet" : "pick or take a photo first");
            return;
        }
        if (e.numImages == 2 && left == null) {
            result.setText("this bundle compares two images: pick the left photo, then the right one");
            return;
        }
        List<ImageFiles.Decoded> images = new ArrayList<>();
        if (e.numImages == 2) images.add(new ImageFiles.Decoded(left.pixels, left.width, left.height));
        images.add(new ImageFiles.Decoded(im.pixels, im.width, im.height));
        result.setText("…");
        worker.execute(() -> {
            try {
                Engine.Prediction p = e.predict(images, text, null, null);
                Engine.Inputs in = e.preprocess(images, text);
                Bitmap overlay = keptTokens(in.images, e.manifest.patchesPerImage(), e.manifest.patchSize(), p.keptVisualTokens);
                StringBuilder out = new StringBuilder();
                out.append(String.format(Locale.ROOT, "answer: %s\nconfidence %.3f, top probability %.3f\nexit %d of %d (after layer %d)\n"
                                + "kept visual tokens: %d (keep ratio %s)\n", p.answer, p.confidence,
                        p.maxProbability, p.exitIndex + 1, e.manifest.exitLayers.size(), p.exitLayer, p.keptVisualTokens.length,
                        p.keepRatio));
                if (p.matchScore != null) out.append(String.format(Locale.ROOT, "match probability %.3f\n", p.matchScore));
                out.append("\nlatency (ms):\n");
                for (Map.Entry<String, Double> t : p.timingsMs.entrySet()) {
                    out.append(String.format(Locale.ROOT, "  %-14s %8.2f\n", t.getKey(), t.getValue()));
                }
                runOnUiThread(() -> {
                    view.setImageBitmap(overlay);
                    result.setText(out.toString());
                });
            } catch (MMEdgeException exc) {
                runOnUiThread(() -> result.setText(exc.getClass().getSimpleName() + ": " + exc.getMessage()));
            }
        });
    }

    /**
     * Captions the photo with the bundle's calibrated settings (greedy): the caption, then per word
     * the stage it exited at, the decoder layers it ran and its learned confidence, then latency.
     */
    private void caption() {
        CaptionEngine c = captioner;
        Images.Argb im = image;
        if (im == null) {
            result.setText("pick or take a photo first");
            return;
        }
        result.setText("…");
        worker.execute(() -> {
            try {
                Caption cap = c.caption(im.pixels, im.width, im.height, null);
                Preprocessor.Result seen = c.preprocess(im.pixels, im.width, im.height);
                Bitmap shown = keptTokens(seen.resizedRgb, seen.size, 0, new int[0]); // the model's view (no token overlay)
                String text = captionReport(cap, c.numStages(), c.manifest.depth());
                runOnUiThread(() -> {
                    view.setImageBitmap(shown);
                    result.setText(text);
                });
            } catch (MMEdgeException exc) {
                runOnUiThread(() -> result.setText(exc.getClass().getSimpleName() + ": " + exc.getMessage()));
            }
        });
    }

    /** The caption, word by word with its exit (stage of `stages`, decoder layer of `layers`) and confidence, then latency. */
    static String captionReport(Caption cap, int stages, int layers) {
        StringBuilder out = new StringBuilder();
        out.append(cap.text.isEmpty() ? "(no words)" : cap.text).append("\n\n");
        out.append(String.format(Locale.ROOT, "%-12s %-9s %-9s %s\n", "word", "exit", "layer", "confidence"));
        for (int i = 0; i < cap.tokens.length; i++) {
            String word = i < cap.words.size() ? cap.words.get(i) : "[EOS]";
            out.append(String.format(Locale.ROOT, "%-12s %-9s %-9s %.3f\n", word, (cap.exits[i] + 1) + "/" + stages,
                    cap.exitLayers[i] + "/" + layers, cap.confidences[i]));
        }
        out.append(String.format(Locale.ROOT, "\nmean exit %.2f of %d, keep ratio %s, policy %s, kv %s\n\nlatency (ms):\n",
                cap.meanExit() + 1, stages, cap.keepRatio, cap.policy, cap.kv));
        for (Map.Entry<String, Double> t : cap.timingsMs.entrySet()) {
            out.append(String.format(Locale.ROOT, "  %-14s %8.2f\n", t.getKey(), t.getValue()));
        }
        return out.toString();
    }

    /**
     * Generates text about the photo with the bundle's settings for the task (greedy): an empty question
     * captions it (task "caption"), a question is answered (task "answer"). Shows the text, then per
     * token its piece, exit and confidence, the timings and the settings that applied.
     */
    private void generate() {
        VLMEngine g = generator;
        Images.Argb im = image;
        String prompt = question.getText().toString();
        if (im == null) {
            result.setText("pick or take a photo first");
            return;
        }
        boolean captioning = HFTokenizer.pyStrip(prompt).isEmpty(); // what the engine refuses as an empty prompt
        String task = captioning ? "caption" : "answer";
        result.setText("…");
        worker.execute(() -> {
            try {
                Controller.Setting applied = g.settings(task);
                Generation gen;
                if (captioning) {
                    gen = g.caption(im.pixels, im.width, im.height, null);
                } else {
                    VLMEngine.Request r = new VLMEngine.Request();
                    r.task = task;
                    gen = g.generate(im.pixels, im.width, im.height, prompt, r);
                }
                List<String> pieces = new ArrayList<>();
                for (int id : gen.tokens) pieces.add(g.tokenizer.decode(new int[] {id}));
                Preprocessor.Result seen = g.preprocess(im.pixels, im.width, im.height);
                Bitmap shown = keptTokens(seen.resizedRgb, seen.size, 0, new int[0]); // the model's view (no token overlay)
                String text = generationReport(gen, pieces, g.manifest, task, applied);
                runOnUiThread(() -> {
                    view.setImageBitmap(shown);
                    result.setText(text);
                });
            } catch (MMEdgeException exc) {
                runOnUiThread(() -> result.setText(exc.getClass().getSimpleName() + ": " + exc.getMessage()));
            }
        });
    }

    /**
     * A generation: the text, then per token its piece (`pieces`, decoded alone; a stop id or other
     * special token shows as its id), its exit (stage of the decoder's stages, decoder layer of its
     * layers) and its learned confidence, then time to first token, ms per decoded token, total ms, the
     * visual tokens kept, the settings that applied for `task` (`applied`: VLMEngine.settings(task)) and
     * each timing the Generation carries (preprocessing, each graph's total, decode, total).
     */
    static String generationReport(Generation gen, List<String> pieces, VLMManifest m, String task, Controller.Setting applied) {
        int stages = m.numStages();
        StringBuilder out = new StringBuilder();
        out.append(gen.text.isEmpty() ? "(no text)" : gen.text).append("\n\n");
        out.append(String.format(Locale.ROOT, "%-14s %-7s %-9s %-9s %s\n", "token", "id", "exit", "layer", "confidence"));
        for (int i = 0; i < gen.tokens.length; i++) {
            int id = gen.tokens[i];
            String piece = i < pieces.size() ? pieces.get(i) : "";
            if (piece.isEmpty()) piece = m.stopIds.contains(id) ? "[stop]" : "[" + id + "]";
            List<Integer> layers = m.stageLayers.get(gen.exits[i]);
            int layer = layers.get(layers.size() - 1) + 1; // decoder layers run before the exit
            out.append(String.format(Locale.ROOT, "%-14s %-7d %-9s %-9s %.3f\n", piece, id, (gen.exits[i] + 1) + "/" + stages,
                    layer + "/" + m.depth(), gen.confidences[i]));
        }
        Double decode = gen.timingsMs.get("decode");
        Double total = gen.timingsMs.get("total");
        String perToken = decode != null && gen.tokens.length > 1
                ? String.format(Locale.ROOT, "%.2f", (decode - gen.firstTokenMs) / (gen.tokens.length - 1)) : "n/a (one token)";
        out.append(String.format(Locale.ROOT, "\nmean exit %.2f of %d\ntime to first token %.2f ms, %s ms per decoded token, "
                        + "total %s ms\nvisual tokens kept: %d of %d (keep ratio %s)\n", gen.meanExit() + 1, stages, gen.firstTokenMs,
                perToken, total == null ? "n/a" : String.format(Locale.ROOT, "%.2f", total), gen.keptVisualTokens, m.numImageTokens,
                gen.keepRatio));
        String source = m.thresholds.tasks.containsKey(task) ? "the bundle's thresholds.tasks." + task : "the bundle's thresholds";
        out.append(String.format(Locale.ROOT, "settings (task %s, %s): policy %s, keep ratio %s; kv %s, beam %d\n", task, source,
                applied.policy, applied.keepRatio, gen.kv, gen.beam));
        out.append("\nlatency (ms):\n");
        for (Map.Entry<String, Double> t : gen.timingsMs.entrySet()) {
            out.append(String.format(Locale.ROOT, "  %-14s %8.2f\n", t.getKey(), t.getValue()));
        }
        return out.toString();
    }

    /**
     * keptTokens of each image of a query side by side (left, right); image i's kept patch j is
     * numbered i * N + j in `kept` (N = `patches` per image).
     */
    static Bitmap keptTokens(List<Preprocessor.Result> images, int patches, int patch, int[] kept) {
        List<Bitmap> views = new ArrayList<>();
        int width = 0;
        int height = 0;
        for (int i = 0; i < images.size(); i++) {
            List<Integer> own = new ArrayList<>();
            for (int k : kept) if (images.size() == 1 || (k >= i * patches && k < (i + 1) * patches)) own.add(k - i * patches);
            int[] mine = new int[own.size()];
            for (int j = 0; j < mine.length; j++) mine[j] = own.get(j);
            Preprocessor.Result r = images.get(i);
            Bitmap view = keptTokens(r.resizedRgb, r.size, patch, mine);
            views.add(view);
            width += view.getWidth();
            height = Math.max(height, view.getHeight());
        }
        if (views.size() == 1) return views.get(0);
        Bitmap out = Bitmap.createBitmap(width, height, Bitmap.Config.ARGB_8888);
        Canvas canvas = new Canvas(out);
        int x = 0;
        for (Bitmap view : views) {
            canvas.drawBitmap(view, x, 0, null);
            x += view.getWidth();
        }
        return out;
    }

    /** The model's S x S view of the image, scaled up, with dropped patches dimmed and kept ones outlined. */
    static Bitmap keptTokens(int[] rgb, int size, int patch, int[] kept) {
        int scale = Math.max(1, 480 / size);
        int[] argb = new int[size * size];
        for (int p = 0; p < argb.length; p++) argb[p] = Color.rgb(rgb[3 * p], rgb[3 * p + 1], rgb[3 * p + 2]);
        Bitmap small = Bitmap.createBitmap(argb, size, size, Bitmap.Config.ARGB_8888);
        Bitmap big = Bitmap.createScaledBitmap(small, size * scale, size * scale, false);
        Bitmap out = big.copy(Bitmap.Config.ARGB_8888, true);
        if (patch <= 0) return out;
        Canvas canvas = new Canvas(out);
        int perRow = size / patch;
        boolean[] keep = new boolean[perRow * perRow];
        for (int k : kept) if (k >= 0 && k < keep.length) keep[k] = true;
        Paint dim = new Paint();
        dim.setColor(Color.argb(150, 0, 0, 0));
        Paint edge = new Paint();
        edge.setStyle(Paint.Style.STROKE);
        edge.setStrokeWidth(2);
        edge.setColor(Color.rgb(255, 200, 0));
        int cell = patch * scale;
        for (int i = 0; i < keep.length; i++) {
            int x = (i % perRow) * cell;
            int y = (i / perRow) * cell;
            canvas.drawRect(x, y, x + cell, y + cell, keep[i] ? edge : dim);
        }
        return out;
    }

    @Override
    protected void onDestroy() {
        worker.shutdownNow();
        if (engine != null) engine.close();
        if (captioner != null) captioner.close();
        if (generator != null) generator.close();
        super.onDestroy();
    }
}
