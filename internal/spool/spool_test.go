package spool

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gatedReader hands out its data only while open is not closed.
type gatedReader struct {
	data io.Reader
	open chan struct{}
}

func (g *gatedReader) Read(p []byte) (int, error) {
	<-g.open
	return g.data.Read(p)
}

func TestSpoolKeepsReadingWhileNobodyReads(t *testing.T) {
	data := make([]byte, 5<<20+7)
	for i := range data {
		data[i] = byte(i * 31)
	}
	// The source must be drained although the reader has not started:
	// that is what unblocks Apache.
	src := bytes.NewReader(data)
	s := New(64<<10, t.TempDir(), nil)
	go s.Fill(src)
	defer s.Close()
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.err == io.EOF
	}, 10*time.Second, time.Millisecond, "the source was not read to its end")
	s.mu.Lock()
	assert.NotNil(t, s.file, "over the memory limit the spool uses a file")
	assert.LessOrEqual(t, len(s.mem), 64<<10)
	s.mu.Unlock()
	got, err := io.ReadAll(iotest.OneByteReader(io.LimitReader(s, 100)))
	require.NoError(t, err)
	rest, err := io.ReadAll(s)
	require.NoError(t, err)
	assert.Equal(t, sha256.Sum256(data), sha256.Sum256(append(got, rest...)))
}

func TestSpoolWaitsForData(t *testing.T) {
	g := &gatedReader{data: strings.NewReader("late"), open: make(chan struct{})}
	s := New(1024, t.TempDir(), nil)
	go s.Fill(g)
	defer s.Close()
	got := make(chan string)
	go func() {
		b, _ := io.ReadAll(s)
		got <- string(b)
	}()
	select {
	case <-got:
		t.Fatal("Read returned before the source had anything")
	case <-time.After(50 * time.Millisecond):
	}
	close(g.open)
	assert.Equal(t, "late", <-got)
}

func TestSpoolPassesErrors(t *testing.T) {
	boom := errors.New("client went away")
	s := New(1024, t.TempDir(), nil)
	go s.Fill(io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(boom)))
	b, err := io.ReadAll(s)
	assert.Equal(t, "abc", string(b))
	assert.ErrorIs(t, err, boom)
	require.NoError(t, s.Close())
	_, err = s.Read(make([]byte, 1))
	assert.ErrorIs(t, err, os.ErrClosed)
}

func TestSpoolFileError(t *testing.T) {
	s := New(10, "/nonexistent-dir", nil)
	go s.Fill(strings.NewReader(strings.Repeat("x", 100)))
	_, err := io.ReadAll(s)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spool request body")
}

func TestWriteSide(t *testing.T) {
	s := New(4, t.TempDir(), nil)
	defer s.Close()
	for _, p := range []string{"ab", "cd", "efgh", "ij"} {
		n, err := s.Write([]byte(p))
		require.NoError(t, err)
		assert.Equal(t, len(p), n)
	}
	ended, _ := s.Ended()
	assert.False(t, ended)
	s.CloseWrite(nil)
	s.CloseWrite(errors.New("ignored: the first end counts"))
	_, err := s.Write([]byte("late"))
	assert.ErrorIs(t, err, ErrEnded)
	b, err := io.ReadAll(s)
	require.NoError(t, err)
	assert.Equal(t, "abcdefghij", string(b))
	ended, err = s.Ended()
	assert.True(t, ended)
	assert.Equal(t, io.EOF, err)
}

// TestBudget: spools sharing a budget hold no more than it in memory
// together; the bytes that do not fit go to the file, and what a reader
// takes, or a Close drops, is given back.
func TestBudget(t *testing.T) {
	b := NewBudget(10)
	inFile := func(s *Spool) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.file != nil
	}
	dir := t.TempDir()
	first, second, third := New(8, dir, b), New(8, dir, b), New(8, dir, b)
	defer first.Close()
	defer second.Close()
	defer third.Close()

	_, err := first.Write([]byte("12345678"))
	require.NoError(t, err)
	assert.False(t, inFile(first), "the first 8 bytes fit the budget of 10")
	_, err = second.Write([]byte("abcdefgh"))
	require.NoError(t, err)
	assert.True(t, inFile(second), "8 more bytes do not fit what is left (2)")
	assert.Equal(t, int64(2), b.free.Load())

	buf := make([]byte, 8)
	n, err := first.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "12345678", string(buf[:n]))
	assert.Equal(t, int64(10), b.free.Load(), "read bytes are given back")

	_, err = third.Write([]byte("ABCD"))
	require.NoError(t, err)
	assert.False(t, inFile(third))
	require.NoError(t, third.Close())
	assert.Equal(t, int64(10), b.free.Load(), "a closed spool gives back what it held")

	second.CloseWrite(nil)
	got, err := io.ReadAll(second)
	require.NoError(t, err)
	assert.Equal(t, "abcdefgh", string(got), "spilled bytes read back from the file")
}
