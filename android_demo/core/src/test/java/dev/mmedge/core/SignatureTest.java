package dev.mmedge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.mmedge.core.testing.Golden;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyPairGenerator;
import java.util.Base64;
import java.util.Map;
import org.junit.After;
import org.junit.Before;
import org.junit.Test;

/** manifest.sig as `mmedge sign` writes it (tests/vectors/golden/signature.json) verifies here, and
 * a changed manifest, another key, a malformed or missing signature are refused. */
public class SignatureTest {
    private Path dir;
    private Map<String, Object> vector;
    private byte[] manifest;
    private byte[] pem;

    @Before
    public void setUp() throws IOException {
        vector = Golden.json(Golden.golden().resolve("signature.json"));
        dir = Files.createTempDirectory("mmedge-sig-");
        manifest = Files.readAllBytes(Golden.repo().resolve((String) vector.get("bundle")).resolve("manifest.json"));
        pem = ((String) vector.get("public_key_pem")).getBytes(StandardCharsets.US_ASCII);
        writeSig(Json.write(vector.get("manifest_sig")));
    }

    @After
    public void tearDown() throws IOException {
        Files.deleteIfExists(dir.resolve("manifest.sig"));
        Files.deleteIfExists(dir);
    }

    private void writeSig(String text) throws IOException {
        Files.write(dir.resolve("manifest.sig"), text.getBytes(StandardCharsets.UTF_8));
    }

    private static void refused(Runnable r, String code, String part) {
        try {
            r.run();
            fail("accepted; expected a refusal mentioning " + part);
        } catch (BundleException exc) {
            assertTrue(exc.getMessage(), exc.getMessage().contains(part));
            assertEquals(exc.getMessage(), code, exc.code());
        }
    }

    @Test
    public void pythonSignatureVerifies() throws Exception {
        assertEquals(vector.get("manifest_sha256"), IO.hex(java.security.MessageDigest.getInstance("SHA-256").digest(manifest)));
        Signatures.verify(dir, manifest, pem);
        assertEquals(((Map<?, ?>) vector.get("manifest_sig")).get("public_key_sha256"),
                Signatures.fingerprint(Signatures.publicKey(pem)));
    }

    @Test
    public void changedManifestIsRefused() {
        byte[] changed = manifest.clone();
        changed[changed.length / 2] ^= 1;
        refused(() -> Signatures.verify(dir, changed, pem), BundleException.SIGNATURE_INVALID, "does not match manifest.json");
    }

    @Test
    public void anotherKeyIsRefused() throws Exception {
        byte[] der = KeyPairGenerator.getInstance("Ed25519").generateKeyPair().getPublic().getEncoded();
        String other = "-----BEGIN PUBLIC KEY-----\n" + Base64.getEncoder().encodeToString(der) + "\n-----END PUBLIC KEY-----\n";
        refused(() -> Signatures.verify(dir, manifest, other.getBytes(StandardCharsets.US_ASCII)), BundleException.SIGNATURE_KEY, "another key");
        refused(() -> Signatures.publicKey("not a key".getBytes(StandardCharsets.US_ASCII)), BundleException.SIGNATURE_KEY, "PEM public key");
    }

    @Test
    public void malformedOrMissingSignatureIsRefused() throws IOException {
        writeSig("{\"format\": \"other\"}");
        refused(() -> Signatures.verify(dir, manifest, pem), BundleException.SIGNATURE_MALFORMED, "malformed");
        Files.delete(dir.resolve("manifest.sig"));
        refused(() -> Signatures.verify(dir, manifest, pem), BundleException.SIGNATURE_MISSING, "is not signed");
    }
}
