package integrity

import (
	"encoding/hex"
	"math/rand/v2"
	"testing"
)

// TestDecodeHashIsHexDecode: readLink's decoder accepts exactly what
// encoding/hex accepts, and decodes it to the same bytes.
func TestDecodeHashIsHexDecode(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	digits := "0123456789abcdefABCDEF"
	for i := 0; i < 20000; i++ {
		src := make([]byte, 64)
		for j := range src {
			src[j] = digits[r.IntN(len(digits))]
		}
		if i%2 == 1 {
			src[r.IntN(64)] = byte(r.IntN(256)) // often not a digit
		}
		var want, got Hash
		_, err := hex.Decode(want[:], src)
		ok := decodeHash(&got, src)
		if ok != (err == nil) || ok && got != want {
			t.Fatalf("%q: decodeHash %v %x, hex.Decode %v %x", src, ok, got, err, want)
		}
	}
	for c := 0; c < 256; c++ {
		src := []byte("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
		src[17] = byte(c)
		var want, got Hash
		_, err := hex.Decode(want[:], src)
		if ok := decodeHash(&got, src); ok != (err == nil) || ok && got != want {
			t.Fatalf("byte %#x: decodeHash %v, hex.Decode %v", c, ok, err)
		}
	}
	var h Hash
	if decodeHash(&h, make([]byte, 63)) {
		t.Fatal("63 bytes decoded")
	}
}
