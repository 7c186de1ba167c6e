package leak

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// KeySet is the public keys leak reports must be signed with
// (--leak-report-keys), read from a file and read again when the file
// changes: GitHub rotates its secret-scanning keys, and an operator
// replaces the file without a restart.
//
// The file is either PEM, each ECDSA P-256 public key preceded by a line
// "# key-id: <id>", or the JSON GitHub publishes at
// https://api.github.com/meta/public_keys/secret_scanning:
// {"public_keys": [{"key_identifier": "…", "key": "<PEM>", …}]}.
type KeySet struct {
	path   string
	logger *slog.Logger

	mu      sync.Mutex
	keys    map[string]*ecdsa.PublicKey
	modTime time.Time
	size    int64
}

// LoadKeySet reads the key file at path: an error when it cannot be read
// or holds no key.
func LoadKeySet(path string, logger *slog.Logger) (*KeySet, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ks := &KeySet{path: path, logger: logger}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	keys, err := readKeys(path)
	if err != nil {
		return nil, err
	}
	ks.keys, ks.modTime, ks.size = keys, fi.ModTime(), fi.Size()
	return ks, nil
}

// current returns the keys, read again first when the file's modification
// time or size changed. A file that no longer reads keeps the keys it had
// (logged): a half-written file must not open or close the endpoint.
func (ks *KeySet) current() map[string]*ecdsa.PublicKey {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	fi, err := os.Stat(ks.path)
	if err != nil {
		ks.logger.Error("--leak-report-keys: keeping the keys read before", "err", err)
		return ks.keys
	}
	if fi.ModTime().Equal(ks.modTime) && fi.Size() == ks.size {
		return ks.keys
	}
	keys, err := readKeys(ks.path)
	if err != nil {
		ks.logger.Error("--leak-report-keys: keeping the keys read before", "err", err)
		return ks.keys
	}
	ks.keys, ks.modTime, ks.size = keys, fi.ModTime(), fi.Size()
	ks.logger.Info("--leak-report-keys: keys read again", "keys", len(keys))
	return keys
}

// Verify checks that sig (base64 of an ASN.1 ECDSA signature) signs the
// SHA-256 of body with the key named keyID.
func (ks *KeySet) Verify(keyID, sig string, body []byte) error {
	if keyID == "" || sig == "" {
		return errors.New("The report must be signed: Github-Public-Key-Identifier and Github-Public-Key-Signature are required.")
	}
	pub, ok := ks.current()[keyID]
	if !ok {
		return errors.New("The report is signed with an unknown key.")
	}
	der, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return errors.New("Github-Public-Key-Signature must be base64.")
	}
	digest := sha256.Sum256(body)
	if !ecdsa.VerifyASN1(pub, digest[:], der) {
		return errors.New("The report's signature does not verify.")
	}
	return nil
}

func readKeys(path string) (map[string]*ecdsa.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys map[string]*ecdsa.PublicKey
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' {
		keys, err = parseJSONKeys(t)
	} else {
		keys, err = parsePEMKeys(b)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no public key in the file", path)
	}
	return keys, nil
}

func parseJSONKeys(b []byte) (map[string]*ecdsa.PublicKey, error) {
	var doc struct {
		PublicKeys []struct {
			KeyIdentifier string `json:"key_identifier"`
			Key           string `json:"key"`
		} `json:"public_keys"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("not the JSON of GitHub's public keys: %w", err)
	}
	keys := map[string]*ecdsa.PublicKey{}
	for i, k := range doc.PublicKeys {
		if k.KeyIdentifier == "" {
			return nil, fmt.Errorf("public_keys[%d]: key_identifier is empty", i)
		}
		block, _ := pem.Decode([]byte(k.Key))
		if block == nil {
			return nil, fmt.Errorf("public_keys[%d]: key is not PEM", i)
		}
		pub, err := parseKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public_keys[%d]: %w", i, err)
		}
		keys[k.KeyIdentifier] = pub
	}
	return keys, nil
}

// parsePEMKeys reads "# key-id: <id>" lines, each followed by one PEM
// public key.
func parsePEMKeys(b []byte) (map[string]*ecdsa.PublicKey, error) {
	keys := map[string]*ecdsa.PublicKey{}
	var id string
	var block []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case block != nil:
			block = append(block, line)
			if strings.HasPrefix(line, "-----END ") {
				p, _ := pem.Decode([]byte(strings.Join(block, "\n")))
				if p == nil {
					return nil, fmt.Errorf("line %d: the PEM block of key %q does not decode", n, id)
				}
				pub, err := parseKey(p.Bytes)
				if err != nil {
					return nil, fmt.Errorf("line %d: key %q: %w", n, id, err)
				}
				keys[id], id, block = pub, "", nil
			}
		case strings.HasPrefix(line, "-----BEGIN "):
			if id == "" {
				return nil, fmt.Errorf(`line %d: a PEM block needs a line "# key-id: <id>" before it`, n)
			}
			block = []string{line}
		case strings.HasPrefix(line, "#"):
			if v, ok := strings.CutPrefix(strings.TrimSpace(strings.TrimPrefix(line, "#")), "key-id:"); ok {
				if id = strings.TrimSpace(v); id == "" {
					return nil, fmt.Errorf("line %d: empty key-id", n)
				}
			}
		case line != "":
			return nil, fmt.Errorf(`line %d: want "# key-id: <id>" or a PEM public key`, n)
		}
	}
	if block != nil {
		return nil, fmt.Errorf("the PEM block of key %q has no END line", id)
	}
	return keys, sc.Err()
}

func parseKey(der []byte) (*ecdsa.PublicKey, error) {
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, err
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, errors.New("not an ECDSA P-256 public key")
	}
	return pub, nil
}
