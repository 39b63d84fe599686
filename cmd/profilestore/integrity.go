package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
)

// IntegrityConfig configures seals (docs/INTEGRITY.md).
type IntegrityConfig struct {
	// SigningKey is the ed25519 key seals are signed with, outside the
	// data directory; empty: this instance chains events but writes no seals.
	SigningKey string `yaml:"signing_key"`
	// SealEvery and SealInterval: a seal after this many events or this
	// long, whichever comes first.
	SealEvery    int           `yaml:"seal_every"`
	SealInterval time.Duration `yaml:"seal_interval"`
	// TrustedKeys are public keys ("ed25519:<base64>") of earlier signing
	// keys, so that seals signed before a rotation still verify.
	TrustedKeys []string `yaml:"trusted_keys"`
	// CheckAtStart runs the online check of the whole history when serve
	// starts. Off by default: the check keeps one hash per stream in
	// memory (gigabytes for a million users), which the views' bounded
	// memory does not; an admin starts it (POST /_profilestore/v1/integrity/check)
	// or `profilestore verify` runs offline.
	CheckAtStart bool `yaml:"check_at_start"`
}

func (c *IntegrityConfig) validate(dataDir string) error {
	if c.SealEvery < 1 {
		return errors.New("config: integrity.seal_every must be at least 1")
	}
	if c.SealInterval <= 0 {
		return errors.New("config: integrity.seal_interval must be positive")
	}
	for i, k := range c.TrustedKeys {
		if _, err := integrity.ParsePublicKey(k); err != nil {
			return fmt.Errorf("config: integrity.trusted_keys[%d]: %v", i, err)
		}
	}
	if c.SigningKey != "" && inside(c.SigningKey, dataDir) {
		return fmt.Errorf("config: integrity.signing_key %s is inside the data directory %s; keep it outside, so that a copy or backup of the data does not carry the key that vouches for it", c.SigningKey, dataDir)
	}
	return nil
}

// inside reports whether path lies in dir (both made absolute and cleaned).
func inside(path, dir string) bool {
	p, err1 := filepath.Abs(path)
	d, err2 := filepath.Abs(dir)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(d, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// trustedKeys are the public keys verify accepts: the signing key's, then
// the configured earlier ones, then those given on the command line.
func (c *IntegrityConfig) trustedKeys(extra []string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	if c.SigningKey != "" {
		k, err := integrity.LoadKey(c.SigningKey)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k.Public().(ed25519.PublicKey))
	}
	for _, s := range append(append([]string{}, c.TrustedKeys...), extra...) {
		k, err := readPublicKey(s)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// readPublicKey takes "ed25519:<base64>" or a file holding it (or a PEM key).
func readPublicKey(s string) (ed25519.PublicKey, error) {
	if !strings.HasPrefix(s, "ed25519:") {
		b, err := os.ReadFile(s)
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		s = string(b)
	}
	return integrity.ParsePublicKey(s)
}

// sealWriter returns the app's seal writer, nil without a signing key.
func (a *app) sealWriter() (*integrity.Writer, error) {
	if a.cfg.Integrity.SigningKey == "" {
		return nil, nil
	}
	key, err := integrity.LoadKey(a.cfg.Integrity.SigningKey)
	if err != nil {
		return nil, err
	}
	return integrity.NewWriter(a.Store, integrity.WriterOptions{Key: key, Every: a.cfg.Integrity.SealEvery,
		Interval: a.cfg.Integrity.SealInterval, Logger: a.log}), nil
}

func integrityCommand(load loader, f *cliFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "integrity",
		Short: "Seal keys and seals of the tamper-evident history (docs/INTEGRITY.md)",
	}
	var keyPath string
	keygen := &cobra.Command{
		Use:   "keygen",
		Short: "Create the ed25519 key seals are signed with (never overwrites one)",
		Long: `Create a new ed25519 signing key at --key (default: integrity.signing_key of
the configuration), mode 0600, and print its public key. Keep the key outside
the data directory; give the public key to every witness and to verify.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, err := load()
			if err != nil {
				return err
			}
			path := keyPath
			if path == "" {
				path = cfg.Integrity.SigningKey
			}
			if path == "" {
				return usageError{errors.New("integrity keygen: give --key PATH or set integrity.signing_key")}
			}
			if inside(path, cfg.DataDir) {
				return fmt.Errorf("integrity keygen: %s is inside the data directory %s; choose a path outside it", path, cfg.DataDir)
			}
			pub, err := integrity.GenerateKey(path)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "signing key written to %s\npublic key: %s\nkey id: %s\n", path, integrity.EncodePublicKey(pub), integrity.KeyID(pub))
			return nil
		},
	}
	keygen.Flags().StringVar(&keyPath, "key", "", "where to write the key (default integrity.signing_key)")
	seal := &cobra.Command{
		Use:   "seal",
		Short: "Seal everything written since the last seal now (stop the server first on bolt)",
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, log, err := load()
			if err != nil {
				return err
			}
			ctx := commandContext(cmd)
			a, err := openExisting(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer a.close()
			w, err := a.sealWriter()
			if err != nil {
				return err
			}
			if w == nil {
				return errors.New("integrity seal: no integrity.signing_key configured (create one with `profilestore integrity keygen`)")
			}
			ref, err := w.SealNow(ctx)
			if err != nil {
				return err
			}
			if ref == nil {
				fmt.Fprintln(cmd.OutOrStdout(), "nothing to seal: the log is empty")
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "latest seal %d at position %s, root %s\n", ref.Seq, ref.Position, ref.Root)
			return nil
		},
	}
	cmd.AddCommand(f.add(keygen, "data-dir"), f.add(seal, "data-dir", "store", "esdb-url"))
	return cmd
}

func commandContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// verifyOutput is what verify prints with --json.
type verifyOutput struct {
	integrity.Report
	OK bool `json:"ok"`
}

func verifyCommand(load loader) *cobra.Command {
	var since uint64
	var witnessPath, exportPath string
	var publicKeys []string
	var asJSON, bounded bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check every hash chain and seal of the log; exit 1 on any break",
		Long: `Walk the event log in order and check every event's hash and link to its
stream's previous event, and every seal's signature, chain and Merkle root.
Every break is reported with its stream, revision and position; the exit
status is 1 if there is any.

--since N starts at seal N (which must verify) and checks only what follows.
--witness FILE compares the log with a seal a witness kept (a log that ends
before it was truncated). --export FILE verifies an export file (NDJSON)
instead of a store, with no data directory; --bounded says the export was
bounded with --from, so streams may start after revision 0. Seals verify with
the configured signing key's public key, integrity.trusted_keys and every
--public-key ("ed25519:<base64>" or a file holding it).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, log, err := load()
			if err != nil {
				return err
			}
			keys, err := cfg.Integrity.trustedKeys(publicKeys)
			if err != nil {
				return err
			}
			if len(keys) == 0 {
				log.Warn("verify: no public key given (--public-key or integrity.signing_key): every seal will be reported as forged")
			}
			var witness *integrity.Seal
			if witnessPath != "" {
				s, err := readWitness(witnessPath)
				if err != nil {
					return err
				}
				witness = &s
			}
			ctx := commandContext(cmd)
			var r integrity.Report
			if exportPath != "" {
				if since != 0 {
					return usageError{errors.New("verify: --since works on a store, not on an export file")}
				}
				r, err = verifyExport(exportPath, keys, bounded, witness)
			} else {
				var a *app
				if a, err = openExisting(ctx, cfg, log); err != nil {
					return err
				}
				defer a.close()
				r, err = integrity.VerifyStore(ctx, a.Store, keys, since, witness, integrity.Progress(progressReporter("verifying")))
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if r.Breaks == nil {
					r.Breaks = []integrity.Break{}
				}
				if err := enc.Encode(verifyOutput{Report: r, OK: r.OK()}); err != nil {
					return err
				}
			} else {
				for _, b := range r.Breaks {
					fmt.Fprintln(out, "BREAK", b.String())
				}
				last := "no seal verified"
				if r.LastSeal != nil {
					last = fmt.Sprintf("verified up to seal %d (sealed %s, position %s)", r.LastSeal.Seq, r.LastSeal.SealedAt.Format(time.RFC3339), r.LastSeal.Position)
				}
				fmt.Fprintf(out, "%d events, %d seals, %s; %d events not sealed yet; %d breaks\n", r.Events, r.Seals, last, r.Unsealed, len(r.Breaks))
			}
			if !r.OK() {
				return fmt.Errorf("verify: %d breaks in the history", len(r.Breaks))
			}
			return nil
		},
	}
	cmd.Flags().Uint64Var(&since, "since", 0, "start at this seal number and check only what follows it")
	cmd.Flags().StringVar(&witnessPath, "witness", "", "a seal kept by a witness (JSON: the seal, or a log.sealed feed line)")
	cmd.Flags().StringVar(&exportPath, "export", "", "verify this export file (NDJSON) instead of the store")
	cmd.Flags().BoolVar(&bounded, "bounded", false, "the export file was bounded with --from (streams may start after revision 0)")
	cmd.Flags().StringArrayVar(&publicKeys, "public-key", nil, "a trusted public key, or a file holding one (repeatable)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// readWitness reads a seal: its payload, a feed line or export line of a
// log.sealed event, or the latest_seal of GET /_profilestore/v1/integrity.
func readWitness(path string) (integrity.Seal, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return integrity.Seal{}, fmt.Errorf("witness: %w", err)
	}
	var wrapped struct {
		Data       json.RawMessage `json:"data"`
		LatestSeal json.RawMessage `json:"latest_seal"`
	}
	if json.Unmarshal(b, &wrapped) == nil {
		switch {
		case len(wrapped.Data) > 0:
			b = wrapped.Data
		case len(wrapped.LatestSeal) > 0:
			b = wrapped.LatestSeal
		}
	}
	s, err := integrity.ParseSeal(b)
	if err != nil {
		return s, fmt.Errorf("witness %s: %w", path, err)
	}
	return s, nil
}

// verifyExport verifies an export file with no store.
func verifyExport(path string, keys []ed25519.PublicKey, bounded bool, witness *integrity.Seal) (integrity.Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return integrity.Report{}, err
	}
	defer f.Close()
	var total uint64
	if st, err := f.Stat(); err == nil {
		total = uint64(st.Size())
	}
	progress := progressReporter("verifying " + filepath.Base(path))
	counter := &countingReader{r: f}
	v := integrity.NewVerifier(keys)
	v.SetWitness(witness)
	if bounded {
		v.TrustFirst()
	}
	sc := bufio.NewScanner(counter)
	sc.Buffer(make([]byte, 64<<10), maxImportLine)
	line := 0
	for sc.Scan() {
		line++
		if len(sc.Bytes()) == 0 {
			continue
		}
		rec, err := parseExportLine(sc.Bytes())
		if err != nil {
			return integrity.Report{}, fmt.Errorf("verify %s: line %d: %w", path, line, err)
		}
		if err := v.Add(&rec); err != nil {
			return integrity.Report{}, err
		}
		if progress != nil && line%4096 == 0 {
			progress(counter.n, total)
		}
	}
	if err := sc.Err(); err != nil {
		return integrity.Report{}, fmt.Errorf("verify %s: line %d: %w", path, line+1, err)
	}
	if progress != nil {
		progress(total, total)
	}
	return v.Finish(), nil
}

func parseExportLine(b []byte) (eventstore.RecordedEvent, error) {
	var l exportLine
	if err := json.Unmarshal(b, &l); err != nil {
		return eventstore.RecordedEvent{}, err
	}
	id, err := uuid.Parse(l.ID)
	if err != nil {
		return eventstore.RecordedEvent{}, errors.New("bad event_id")
	}
	pos, err := eventstore.ParsePosition(l.Position)
	if err != nil {
		return eventstore.RecordedEvent{}, errors.New("bad position")
	}
	return eventstore.RecordedEvent{EventData: eventstore.EventData{ID: id, Type: l.Type, Data: l.Data, Metadata: l.Metadata},
		Stream: l.Stream, Revision: l.Revision, Position: pos, Recorded: l.Recorded}, nil
}

type countingReader struct {
	r io.Reader
	n uint64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	return n, err
}

func verifyProofCommand() *cobra.Command {
	var publicKeys []string
	cmd := &cobra.Command{
		Use:   "verify-proof PROOF_FILE",
		Short: "Check a proof from /_profilestore/v1/integrity/proof offline, with only the public key",
		Long: `Check that the event in a proof (GET /_profilestore/v1/integrity/proof?position=P)
was recorded before its signed seal: the event's hash, the links of the later
events of its stream, the Merkle path to the seal's root and the seal's
signature. Needs only the public key (--public-key, repeatable: "ed25519:<base64>"
or a file holding it); no data directory, no server. "-" reads standard input.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(publicKeys) == 0 {
				return usageError{errors.New("verify-proof: give the seal's --public-key")}
			}
			var keys []ed25519.PublicKey
			for _, s := range publicKeys {
				k, err := readPublicKey(s)
				if err != nil {
					return err
				}
				keys = append(keys, k)
			}
			var b []byte
			var err error
			if args[0] == "-" {
				b, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), maxImportLine))
			} else {
				b, err = os.ReadFile(args[0])
			}
			if err != nil {
				return err
			}
			var pr integrity.Proof
			if err := json.Unmarshal(b, &pr); err != nil {
				return fmt.Errorf("verify-proof: not a proof: %w", err)
			}
			if err := integrity.VerifyProof(&pr, keys); err != nil {
				return fmt.Errorf("verify-proof: NOT proven: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "proven: %s event %s (revision %d of %s) was recorded before seal %d, sealed %s by key %s\n",
				pr.Event.Type, pr.Event.ID, pr.Event.Revision, pr.Event.Stream, pr.Seal.Seq, pr.Seal.SealedAt.Format(time.RFC3339), pr.Seal.KeyID)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&publicKeys, "public-key", nil, "the seal's public key, or a file holding it (repeatable)")
	return cmd
}
