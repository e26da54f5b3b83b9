//go:build !unix

package rendezvous

// canPeek says whether idle connections can wait in peekInto; here
// they cannot, so each keeps a reader goroutine parked in its read.
const canPeek = false

func peekInto(uintptr, []byte) (int, bool) { return 0, true }

func readInto(uintptr, []byte) int { return 0 }
