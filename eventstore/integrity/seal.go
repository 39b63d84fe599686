package integrity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// SealStream is the stream seals are appended to; SealType their type.
const (
	SealStream = "log-seals"
	SealType   = "log.sealed"
)

// sealTag starts the signed statement of a seal.
const sealTag = "profilestore.seal.v1\n"

// Seal is the payload of a log.sealed event: a signed commitment to the
// heads of every covered stream changed in its window, chained to the seal
// before it. The window of seal n holds the events after seal n-1's Through
// event up to and including its own Through event, in log order.
type Seal struct {
	V   int    `json:"v"`
	Seq uint64 `json:"seq"`
	// PrevSeal is the event_hash of seal Seq-1's event; Zero for the
	// genesis seal (Seq 1), whose window starts at the beginning of the log.
	PrevSeal Hash `json:"prev_seal"`
	// Root is the RFC 6962 Merkle root over the window's heads, sorted by
	// stream; Streams is how many heads (leaves) it has.
	Root    Hash   `json:"root"`
	Streams uint64 `json:"streams"`
	// Through is the window's last event.
	Through  Head      `json:"through"`
	SealedAt time.Time `json:"sealed_at"`
	// KeyID names the signing key: the first 8 bytes of SHA-256 of the
	// public key, in hex.
	KeyID     string `json:"key_id"`
	Signature []byte `json:"signature"`
}

// Statement is the exact text a seal's signature covers.
func (s *Seal) Statement() []byte {
	var b strings.Builder
	b.WriteString(sealTag)
	b.WriteString("seq " + strconv.FormatUint(s.Seq, 10) + "\n")
	b.WriteString("prev_seal " + s.PrevSeal.String() + "\n")
	b.WriteString("root " + s.Root.String() + "\n")
	b.WriteString("streams " + strconv.FormatUint(s.Streams, 10) + "\n")
	b.WriteString("through " + strconv.Quote(s.Through.Stream) + " " + strconv.FormatUint(s.Through.Revision, 10) + " " + s.Through.Hash.String() + "\n")
	b.WriteString("sealed_at " + s.SealedAt.UTC().Format(time.RFC3339Nano) + "\n")
	b.WriteString("key_id " + s.KeyID + "\n")
	return []byte(b.String())
}

// KeyID is the name of a public key in seals.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Sign signs the seal with key, setting KeyID and Signature.
func (s *Seal) Sign(key ed25519.PrivateKey) {
	s.KeyID = KeyID(key.Public().(ed25519.PublicKey))
	s.Signature = ed25519.Sign(key, s.Statement())
}

// ErrUnknownKey is returned (wrapped) for a seal signed by a key not given.
var ErrUnknownKey = errors.New("integrity: seal signed by an unknown key")

// VerifySignature checks the seal's signature with the key it names among
// keys.
func (s *Seal) VerifySignature(keys []ed25519.PublicKey) error {
	for _, k := range keys {
		if KeyID(k) != s.KeyID {
			continue
		}
		if !ed25519.Verify(k, s.Statement(), s.Signature) {
			return fmt.Errorf("integrity: seal %d: the signature does not verify with key %s", s.Seq, s.KeyID)
		}
		return nil
	}
	return fmt.Errorf("%w: seal %d names key %s", ErrUnknownKey, s.Seq, s.KeyID)
}

// ParseSeal reads the payload of a log.sealed event.
func ParseSeal(data []byte) (Seal, error) {
	var s Seal
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("integrity: seal payload: %w", err)
	}
	if s.V != 1 || s.Seq == 0 {
		return s, fmt.Errorf("integrity: seal payload: version %d, seq %d", s.V, s.Seq)
	}
	return s, nil
}

// GenerateKey writes a new ed25519 signing key to path (PKCS#8 PEM, mode
// 0600) and returns its public key. It never overwrites a file.
func GenerateKey(path string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("integrity: %s exists; keygen never overwrites a key (move it away to rotate, keeping its public key for verify)", path)
	}
	if err != nil {
		return nil, err
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return pub, f.Close()
}

// LoadKey reads a signing key written by GenerateKey.
func LoadKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("integrity: signing key: %w (create one with `profilestore integrity keygen`)", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("integrity: %s is not a PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("integrity: %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("integrity: %s is not an ed25519 key", path)
	}
	return priv, nil
}

// EncodePublicKey writes a public key as "ed25519:<base64>", the form the
// integrity route serves and verify --public-key reads.
func EncodePublicKey(pub ed25519.PublicKey) string {
	return "ed25519:" + base64.StdEncoding.EncodeToString(pub)
}

// ParsePublicKey reads a public key: "ed25519:<base64>", or a PEM public key.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	if b64, ok := strings.CutPrefix(s, "ed25519:"); ok {
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return nil, errors.New(`integrity: public key: "ed25519:" is not followed by 32 bytes of base64`)
		}
		return ed25519.PublicKey(b), nil
	}
	block, _ := pem.Decode([]byte(s))
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New(`integrity: public key: expected "ed25519:<base64>" or a PEM public key`)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("integrity: public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("integrity: public key: not ed25519")
	}
	return pub, nil
}
