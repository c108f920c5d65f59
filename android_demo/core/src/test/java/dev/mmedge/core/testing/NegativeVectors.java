package dev.mmedge.core.testing;

import dev.mmedge.core.Engine;
import dev.mmedge.core.IO;
import dev.mmedge.core.Json;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;

/**
 * The negative golden vectors (tests/vectors/negative/cases.json, format mmedge-negative-vectors-1,
 * docs/bundle-format.md): a fresh file-by-file copy of the base bundle, the case's ops applied to it,
 * and the case's load options as Engine.Options.
 */
public final class NegativeVectors {
    public static final String FORMAT = "mmedge-negative-vectors-1";

    private NegativeVectors() {
    }

    public static Path dir() {
        return Golden.repo().resolve("tests/vectors/negative");
    }

    /** cases.json, or null when it is not there. */
    public static Map<String, Object> load(Path dir) {
        Path file = dir.resolve("cases.json");
        return Files.isRegularFile(file) ? Golden.json(file) : null;
    }

    /** A file-by-file copy of `src` at `dest` (directories and regular files only; no links, no shared inodes). */
    public static void copyBase(Path src, Path dest) throws IOException {
        Files.walkFileTree(src, new SimpleFileVisitor<Path>() {
            @Override
            public FileVisitResult preVisitDirectory(Path d, BasicFileAttributes a) throws IOException {
                Files.createDirectories(dest.resolve(src.relativize(d).toString()));
                return FileVisitResult.CONTINUE;
            }

            @Override
            public FileVisitResult visitFile(Path f, BasicFileAttributes a) throws IOException {
                if (!a.isRegularFile()) throw new IOException("the base bundle holds a non-regular file " + f);
                Files.copy(f, dest.resolve(src.relativize(f).toString()), StandardCopyOption.REPLACE_EXISTING);
                return FileVisitResult.CONTINUE;
            }
        });
    }

    private static byte[] base64(Map<String, Object> op) {
        return Base64.getDecoder().decode((String) op.get("base64"));
    }

    /** Applies a case's ops, in order, to the bundle copy at `bundle` (vector files from `vectors`/files). */
    public static void applyOps(Path bundle, List<Object> ops, Path vectors) throws IOException, InterruptedException {
        for (Object o : ops) {
            Map<String, Object> op = Json.obj(o);
            String kind = (String) op.get("op");
            if (kind.equals("write_outside")) {
                String name = (String) op.get("name");
                if (name.contains("/") || name.equals("..") || name.equals(".")) throw new IllegalArgumentException("write_outside " + name);
                Files.write(bundle.getParent().resolve(name), base64(op));
                continue;
            }
            String rel = (String) op.get("path");
            Path path = bundle.resolve(rel);
            if (!path.normalize().startsWith(bundle.normalize())) throw new IllegalArgumentException("op path " + rel + " escapes");
            if (!kind.equals("remove") && path.getParent() != null) Files.createDirectories(path.getParent());
            switch (kind) {
                case "write":
                    Files.write(path, base64(op));
                    break;
                case "write_repeat": {
                    byte[] block = base64(op);
                    long count = Json.lng(op.get("count"));
                    try (OutputStream out = Files.newOutputStream(path)) {
                        for (long i = 0; i < count; i++) out.write(block);
                    }
                    break;
                }
                case "copy_vector":
                    Files.copy(vectors.resolve("files").resolve((String) op.get("from")), path, StandardCopyOption.REPLACE_EXISTING);
                    break;
                case "remove":
                    if (Files.isDirectory(path, LinkOption.NOFOLLOW_LINKS)) removeTree(path);
                    else Files.delete(path);
                    break;
                case "mkdir":
                    Files.createDirectory(path);
                    break;
                case "mkfifo": {
                    // Java has no mkfifo: the coreutils command (as Python's os.mkfifo does it)
                    Process p = new ProcessBuilder("mkfifo", path.toString()).redirectErrorStream(true).start();
                    String said = new String(IO.readAll(p.getInputStream(), 1 << 16), StandardCharsets.UTF_8);
                    if (p.waitFor() != 0) throw new IOException("mkfifo " + path + " failed: " + said);
                    break;
                }
                case "symlink":
                    Files.createSymbolicLink(path, Paths.get((String) op.get("target")));
                    break;
                default:
                    throw new IllegalArgumentException("unknown op " + kind);
            }
        }
    }

    /** Engine options for a case's "load" entry (the key is the document's public_key_pem). */
    public static Engine.Options options(Map<String, Object> doc, Map<String, Object> load) {
        Engine.Options o = new Engine.Options();
        if (Boolean.TRUE.equals(load.get("verify_key"))) {
            o.verifyKey = ((String) doc.get("public_key_pem")).getBytes(StandardCharsets.US_ASCII);
        }
        Object min = load.get("min_sequence");
        if (min != null && min != Json.NULL) o.minSequence = Json.lng(min);
        Object name = load.get("expect_name");
        if (name != null && name != Json.NULL) o.expectName = (String) name;
        return o;
    }

    /** Deletes a tree without following links (FIFOs and links are removed, never opened). */
    public static void removeTree(Path root) throws IOException {
        if (!Files.exists(root, LinkOption.NOFOLLOW_LINKS)) return;
        List<Path> all = new ArrayList<>();
        Files.walkFileTree(root, new SimpleFileVisitor<Path>() {
            @Override
            public FileVisitResult visitFile(Path f, BasicFileAttributes a) {
                all.add(f);
                return FileVisitResult.CONTINUE;
            }

            @Override
            public FileVisitResult visitFileFailed(Path f, IOException e) {
                all.add(f);
                return FileVisitResult.CONTINUE;
            }

            @Override
            public FileVisitResult postVisitDirectory(Path d, IOException e) {
                all.add(d);
                return FileVisitResult.CONTINUE;
            }
        });
        for (Path p : all) Files.deleteIfExists(p);
    }
}
