package leak_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/leak"
)

func p256(t *testing.T) (*ecdsa.PrivateKey, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return k, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func sign(t *testing.T, k *ecdsa.PrivateKey, body string) string {
	t.Helper()
	d := sha256.Sum256([]byte(body))
	sig, err := ecdsa.SignASN1(rand.Reader, k, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestKeySet_ReadsPEMWithKeyIDsAndGitHubJSON(t *testing.T) {
	a, aPEM := p256(t)
	b, bPEM := p256(t)
	dir := t.TempDir()
	pemFile := filepath.Join(dir, "keys.pem")
	write(t, pemFile, "# reporters\n# key-id: a\n"+aPEM+"\n#   key-id:   b  \n"+bPEM)
	doc, _ := json.Marshal(map[string]any{"public_keys": []map[string]any{
		{"key_identifier": "a", "key": aPEM, "is_current": false},
		{"key_identifier": "b", "key": bPEM, "is_current": true}}})
	jsonFile := filepath.Join(dir, "keys.json")
	write(t, jsonFile, string(doc))
	for _, file := range []string{pemFile, jsonFile} {
		ks, err := leak.LoadKeySet(file, nil)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for id, k := range map[string]*ecdsa.PrivateKey{"a": a, "b": b} {
			if err := ks.Verify(id, sign(t, k, "body"), []byte("body")); err != nil {
				t.Errorf("%s: key %s: %v", filepath.Base(file), id, err)
			}
		}
		if ks.Verify("a", sign(t, b, "body"), []byte("body")) == nil {
			t.Errorf("%s: key a verifies b's signature", filepath.Base(file))
		}
	}
}

func TestKeySet_BadFilesAreErrors(t *testing.T) {
	_, good := p256(t)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKIXPublicKey(edPub)
	ed := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: edDER}))
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384DER, _ := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	p384PEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: p384DER}))
	for name, content := range map[string]string{
		"empty":             "",
		"no key id":         good,
		"not ecdsa":         "# key-id: a\n" + ed,
		"not P-256":         "# key-id: a\n" + p384PEM,
		"truncated":         "# key-id: a\n" + good[:40],
		"stray text":        "# key-id: a\n" + good + "hello\n",
		"json without keys": `{"public_keys": []}`,
		"json bad key":      `{"public_keys": [{"key_identifier": "a", "key": "nope"}]}`,
		"json no id":        `{"public_keys": [{"key": ` + jsonString(good) + `}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "keys")
			write(t, f, content)
			if _, err := leak.LoadKeySet(f, nil); err == nil {
				t.Error("no error")
			}
		})
	}
}

func jsonString(s string) string { b, _ := json.Marshal(s); return string(b) }

func TestKeySet_ABrokenRewriteKeepsTheKeysItHad(t *testing.T) {
	k, kPEM := p256(t)
	f := filepath.Join(t.TempDir(), "keys.pem")
	write(t, f, "# key-id: a\n"+kPEM)
	ks, err := leak.LoadKeySet(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	write(t, f, "# key-id: a\n-----BEGIN PUBLIC KEY-----\n") // half written
	later := time.Now().Add(time.Second)
	if err := os.Chtimes(f, later, later); err != nil {
		t.Fatal(err)
	}
	if err := ks.Verify("a", sign(t, k, "x"), []byte("x")); err != nil {
		t.Errorf("after a broken rewrite: %v, want the old key kept", err)
	}
}

func TestScanner_ReportsValidChecksumsOnly(t *testing.T) {
	s, err := leak.NewScanner("sk", "pk")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := apikey.DefaultFormat().Generate(keygate.Secret, keygate.Test)
	if err != nil {
		t.Fatal(err)
	}
	raw := tok.String()
	bad := raw[:len(raw)-1] + map[bool]string{true: "1", false: "0"}[raw[len(raw)-1] == '0']
	text := "a=" + raw + "\nb=" + bad + "\nc=x" + raw + "\n\"" + raw + "\"\n"
	var got []leak.Finding
	rejected, err := s.Scan(strings.NewReader(text), func(f leak.Finding) { got = append(got, f) })
	if err != nil {
		t.Fatal(err)
	}
	if rejected != 1 || len(got) != 2 || got[0].Line != 1 || got[1].Line != 4 ||
		got[0].Prefix != tok.Prefix() || got[0].Last4 != tok.Last4() || got[0].Environment != keygate.Test {
		t.Errorf("findings %+v, rejected %d; want lines 1 and 4, 1 rejected", got, rejected)
	}
}
