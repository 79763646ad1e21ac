package lb

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
)

// Sequence is one cycle of smooth weighted round robin over weights, after dividing them by their gcd:
// [60,20,20] -> [0,0,1,2,0] (3/1/1: every 5 consecutive picks are 3/1/1, interleaved).
// len(result) == sum(weights)/gcd. nil for no weights. Weights are >= 1 (one below 1 is never picked).
//
// Smooth means every prefix, also across cycles, gives each index its ideal share n*w/sum rounded down
// or up. nginx's smooth round robin does not keep that bound with many equal weights, so this is
// Balinski and Young's quota method: among the indexes still under their share rounded up, pick the one
// whose share rounded down would next fall behind (earliest deadline); on a tie the one least served
// for its weight, then the lowest index.
func Sequence(weights []int) []int {
	g := 0
	for _, w := range weights {
		if w > 0 {
			g = gcd(g, w)
		}
	}
	if g == 0 {
		return nil
	}
	reduced := make([]int, len(weights))
	total := 0
	for i, w := range weights {
		if w > 0 {
			reduced[i] = w / g
			total += reduced[i]
		}
	}
	count := make([]int, len(weights))
	seq := make([]int, total)
	for n := 1; n <= total; n++ {
		best := -1
		for i, w := range reduced {
			// Eligible: one more pick stays within ceil(n*w/total).
			if w == 0 || count[i]*total >= n*w {
				continue
			}
			if best < 0 || earlier(count[i], w, count[best], reduced[best]) {
				best = i
			}
		}
		count[best]++
		seq[n-1] = best
	}
	return seq
}

// earlier reports whether an index picked c1 times of weight w1 goes before
// one picked c2 times of weight w2: earlier deadline (c+1)/w, then smaller c/w.
func earlier(c1, w1, c2, w2 int) bool {
	if d1, d2 := (c1+1)*w2, (c2+1)*w1; d1 != d2 {
		return d1 < d2
	}
	return c1*w2 < c2*w1
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

const Buckets = 32 // xt_cluster's maximum number of nodes; the source algorithm hashes client addresses into these

// Candidate is one member the source algorithm may send clients to.
type Candidate struct {
	Key    string // the member's endpoint ID
	Weight int
}

// Masks assigns each of the Buckets buckets to exactly one candidate by weighted rendezvous (highest random
// weight) hashing keyed on (seed, bucket, candidate key): masks[i] has bit b set when bucket b goes to
// candidates[i]. Removing a candidate moves only its own buckets (clients of the others stay put); adding
// one takes buckets only from others. Deterministic: no map iteration, no randomness beyond the hash.
// Empty candidates -> nil. The hash is sha256 truncated to 53 bits and the score the standard weighted
// rendezvous -weight/ln(u) with u in (0,1) from the hash. Keys should be distinct; an exact tie of
// scores goes to the smaller key, then the earlier candidate, so the order of candidates does not matter.
func Masks(seed string, candidates []Candidate) []uint32 {
	if len(candidates) == 0 {
		return nil
	}
	masks := make([]uint32, len(candidates))
	for b := range Buckets {
		best, bestScore := -1, 0.0
		for i, c := range candidates {
			score := float64(c.Weight) / -math.Log(unitHash(seed, b, c.Key))
			if best < 0 || score > bestScore ||
				(score == bestScore && c.Key < candidates[best].Key) {
				best, bestScore = i, score
			}
		}
		masks[best] |= 1 << b
	}
	return masks
}

// unitHash maps (seed, bucket, key) to a float in (0,1). Lengths prefix the
// strings so that no two different triples hash the same bytes.
func unitHash(seed string, bucket int, key string) float64 {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(seed)))])
	h.Write([]byte(seed))
	h.Write([]byte{byte(bucket)})
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(key)))])
	h.Write([]byte(key))
	var sum [sha256.Size]byte
	x := binary.BigEndian.Uint64(h.Sum(sum[:0])) >> 11 // 53 bits: exact in a float64
	return (float64(x) + 0.5) / (1 << 53)              // never 0 or 1, so ln(u) < 0
}

// Seed is a stable nonzero uint32 for xt_cluster's --cluster-hash-seed, derived from key (the frontend endpoint ID).
func Seed(key string) uint32 {
	sum := sha256.Sum256([]byte("ournet.lb.seed\x00" + key))
	if s := binary.BigEndian.Uint32(sum[:4]); s != 0 {
		return s
	}
	return 1 // zero is xt_cluster's default seed; keep every frontend's own
}
