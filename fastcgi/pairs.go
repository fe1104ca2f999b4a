package fastcgi

// This file holds the name-value pairs of PARAMS and GET_VALUES records
// (FastCGI 1.0, section 3.4): each length is 1 byte below 128, else 4 bytes
// with the top bit set.

import (
	"encoding/binary"
	"errors"
	"fmt"
)

var errPairs = errors.New("fastcgi: malformed name-value pairs")

// decodePairs calls f for each pair in p. Lengths are checked against the
// bytes actually present, in 64-bit arithmetic, before anything is sliced.
func decodePairs(p []byte, f func(name, value []byte) error) error {
	for len(p) > 0 {
		nameLen, n, err := pairLen(p)
		if err != nil {
			return err
		}
		p = p[n:]
		valueLen, n, err := pairLen(p)
		if err != nil {
			return err
		}
		p = p[n:]
		if nameLen+valueLen > uint64(len(p)) {
			return fmt.Errorf("%w: pair of %d+%d bytes with %d left", errPairs, nameLen, valueLen, len(p))
		}
		if err := f(p[:nameLen], p[nameLen:nameLen+valueLen]); err != nil {
			return err
		}
		p = p[nameLen+valueLen:]
	}
	return nil
}

func pairLen(p []byte) (length uint64, size int, err error) {
	if len(p) == 0 {
		return 0, 0, fmt.Errorf("%w: truncated length", errPairs)
	}
	if p[0]&0x80 == 0 {
		return uint64(p[0]), 1, nil
	}
	if len(p) < 4 {
		return 0, 0, fmt.Errorf("%w: truncated length", errPairs)
	}
	return uint64(binary.BigEndian.Uint32(p) & 0x7fffffff), 4, nil
}

// appendPair appends one name-value pair.
func appendPair(b []byte, name, value string) []byte {
	b = appendPairLen(b, len(name))
	b = appendPairLen(b, len(value))
	b = append(b, name...)
	return append(b, value...)
}

func appendPairLen(b []byte, n int) []byte {
	if n < 128 {
		return append(b, byte(n))
	}
	return binary.BigEndian.AppendUint32(b, uint32(n)|0x80000000)
}
