package dev.mmedge.core;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.MessageDigest;
import java.security.PublicKey;
import java.security.Signature;
import java.security.spec.X509EncodedKeySpec;
import java.util.Arrays;
import java.util.Base64;
import java.util.Map;

/**
 * Signed bundles (docs/bundle-format.md, "Signing"): {@code manifest.sig} holds an Ed25519 signature
 * over the exact bytes of {@code manifest.json}, and the manifest lists the SHA-256 of every other
 * file, so one check covers the bundle. Keys are PEM SubjectPublicKeyInfo files, as {@code mmedge sign
 * --new-key} writes them. Needs a JCA provider with Ed25519 (Java 15+, Android API 33+).
 *
 * <p>Call {@link #verify} with {@link BundleLoader.Loaded#manifestBytes} right after loading, before
 * any stage is opened.
 */
public final class Signatures {
    public static final String FORMAT = "mmedge-signature-1";
    public static final int MAX_SIGNATURE_BYTES = 4096;
    private static final int RAW_KEY_BYTES = 32;

    private Signatures() {
    }

    /**
     * BundleException unless root/manifest.sig is a valid signature of manifestBytes by the PEM key;
     * its code is signature-missing, signature-malformed, signature-key or signature-invalid.
     */
    public static void verify(Path root, byte[] manifestBytes, byte[] publicKeyPem) {
        PublicKey key = publicKey(publicKeyPem);
        if (!Files.exists(root.resolve(BundleLoader.SIGNATURE_FILE), LinkOption.NOFOLLOW_LINKS)) {
            throw new BundleException(BundleException.SIGNATURE_MISSING, root + " is not signed (no " + BundleLoader.SIGNATURE_FILE
                    + ") but a verification key was given; sign it with `mmedge sign --artifact BUNDLE --key PRIVATE.pem`");
        }
        byte[] raw;
        try {
            raw = BundleLoader.readMember(root, BundleLoader.SIGNATURE_FILE, MAX_SIGNATURE_BYTES);
        } catch (BundleException exc) {
            if (exc.reason() == BundleException.Reason.MISSING) throw exc.withCode(BundleException.SIGNATURE_MISSING);
            throw new BundleException(BundleException.SIGNATURE_MALFORMED, BundleLoader.SIGNATURE_FILE + " is malformed ("
                    + exc.getMessage() + "); it must be a regular file of at most " + MAX_SIGNATURE_BYTES + " bytes", exc,
                    BundleLoader.SIGNATURE_FILE, exc.reason());
        }
        Map<String, Object> record;
        byte[] signature;
        try {
            Object parsed = Json.parse(raw, 4);
            if (!(parsed instanceof Map)) throw new IllegalArgumentException("not a JSON object");
            record = Json.obj(parsed);
            if (!FORMAT.equals(record.get("format")) || !"ed25519".equals(record.get("algorithm"))
                    || !"manifest.json".equals(record.get("signed_file"))) {
                throw new IllegalArgumentException("format / algorithm / signed_file are not " + FORMAT
                        + " / ed25519 / manifest.json");
            }
            Object sig = record.get("signature");
            if (!(sig instanceof String)) throw new IllegalArgumentException("no base64 signature");
            signature = Base64.getDecoder().decode((String) sig);
        } catch (Json.ParseException | IllegalArgumentException | ClassCastException exc) {
            throw new BundleException(BundleException.SIGNATURE_MALFORMED, BundleLoader.SIGNATURE_FILE + " is malformed ("
                    + BundleLoader.shortText(String.valueOf(exc.getMessage()), 200) + "); sign the bundle again", exc);
        }
        String fingerprint = fingerprint(key);
        if (!fingerprint.equals(record.get("public_key_sha256"))) {
            throw new BundleException(BundleException.SIGNATURE_KEY, root + " was signed with another key (fingerprint "
                    + String.valueOf(record.get("public_key_sha256")) + ", yours " + fingerprint + ")");
        }
        boolean ok;
        try {
            Signature verifier = Signature.getInstance("Ed25519");
            verifier.initVerify(key);
            verifier.update(manifestBytes);
            ok = verifier.verify(signature);
        } catch (GeneralSecurityException exc) {
            throw new BundleException(BundleException.SIGNATURE_INVALID, "cannot verify the signature: " + exc.getMessage(), exc);
        }
        if (!ok) {
            throw new BundleException(BundleException.SIGNATURE_INVALID, root + ": the signature does not match manifest.json: the manifest was changed "
                    + "after signing, or signed by someone else");
        }
    }

    /** An Ed25519 public key from a PEM SubjectPublicKeyInfo file's bytes. */
    public static PublicKey publicKey(byte[] pem) {
        String text = new String(pem, StandardCharsets.US_ASCII);
        int begin = text.indexOf("-----BEGIN PUBLIC KEY-----");
        int end = text.indexOf("-----END PUBLIC KEY-----");
        if (begin < 0 || end < begin) {
            throw new BundleException(BundleException.SIGNATURE_KEY, "the verification key is not a PEM public key (-----BEGIN PUBLIC KEY-----); "
                    + "use the .pub.pem file `mmedge sign --new-key` wrote");
        }
        String body = text.substring(begin + "-----BEGIN PUBLIC KEY-----".length(), end).replaceAll("\\s", "");
        try {
            return KeyFactory.getInstance("Ed25519").generatePublic(new X509EncodedKeySpec(Base64.getDecoder().decode(body)));
        } catch (GeneralSecurityException | IllegalArgumentException exc) {
            throw new BundleException(BundleException.SIGNATURE_KEY, "the verification key is not an Ed25519 public key ("
                    + exc.getMessage() + ")", exc);
        }
    }

    /** SHA-256 (hex) of the raw 32-byte key: the last 32 bytes of its SubjectPublicKeyInfo encoding. */
    public static String fingerprint(PublicKey key) {
        byte[] der = key.getEncoded();
        byte[] raw = Arrays.copyOfRange(der, der.length - RAW_KEY_BYTES, der.length);
        try {
            return IO.hex(MessageDigest.getInstance("SHA-256").digest(raw));
        } catch (GeneralSecurityException exc) {
            throw new IllegalStateException(exc);
        }
    }
}
