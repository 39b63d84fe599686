package alerts

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/profilestore/profilestore/eventstore"
)

var errNoCheckpoint = errors.New("no checkpoint yet")

// writeFileAtomic replaces path with data so that a crash leaves either the
// old or the new file, never a torn one: write a temporary file, sync it,
// rename it over, sync the directory.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

type positionFile struct {
	Position string `json:"position"`
}

func loadPosition(path string) (eventstore.Position, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return eventstore.Start, errNoCheckpoint
	}
	if err != nil {
		return eventstore.Start, err
	}
	var f positionFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return eventstore.Start, fmt.Errorf("%s is not a checkpoint (%v); move it away to start again from the log's head", path, err)
	}
	return eventstore.ParsePosition(f.Position)
}

func savePosition(path string, p eventstore.Position) error {
	data, _ := json.Marshal(positionFile{Position: p.String()})
	return writeFileAtomic(path, data)
}

// deliveryFile remembers, per sink, how far the alert stream is delivered:
// the count of alerts delivered (the next revision to deliver).
type deliveryFile struct {
	Delivered map[string]string `json:"delivered"`
}

func loadDelivered(path string) (map[string]uint64, error) {
	out := map[string]uint64{}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	var f deliveryFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("%s is not a delivery checkpoint (%v); fix it, or remove it to deliver only the alerts recorded from then on", path, err)
	}
	for k, v := range f.Delivered {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: sink %q has a bad count %q", path, k, v)
		}
		out[k] = n
	}
	return out, nil
}

func saveDelivered(path string, delivered map[string]uint64) error {
	f := deliveryFile{Delivered: map[string]string{}}
	for k, v := range delivered {
		f.Delivered[k] = strconv.FormatUint(v, 10)
	}
	data, _ := json.Marshal(f)
	return writeFileAtomic(path, data)
}
