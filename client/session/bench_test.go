package session

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
)

// BenchmarkHandshake measures one whole handshake over net.Pipe: preamble,
// three messages, both signatures verified.
func BenchmarkHandshake(b *testing.B) {
	alice, bob := testLocal(b, "alice", 1), testLocal(b, "bob", 2)
	ctx := context.Background()
	done := make(chan error, 1)
	for b.Loop() {
		cc, sc := net.Pipe()
		go func() {
			_, plain, err := Sniff(sc)
			if err == nil {
				_, err = Server(ctx, plain, bob)
			}
			done <- err
		}()
		if _, err := Client(ctx, cc, alice, nil); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		cc.Close()
		sc.Close()
	}
}

// BenchmarkTransfer measures one Write of each size through an
// established session over net.Pipe, read on the other side.
func BenchmarkTransfer(b *testing.B) {
	for _, size := range []int{100, 1 << 10, 64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			alice, bob := testLocal(b, "alice", 1), testLocal(b, "bob", 2)
			cc, sc := net.Pipe()
			done := make(chan *Conn, 1)
			go func() {
				_, plain, _ := Sniff(sc)
				c, err := Server(context.Background(), plain, bob)
				if err != nil {
					b.Error(err)
				}
				done <- c
			}()
			client, err := Client(context.Background(), cc, alice, nil)
			if err != nil {
				b.Fatal(err)
			}
			server := <-done
			if server == nil {
				b.FailNow()
			}
			drained := make(chan int64, 1)
			go func() {
				n, _ := io.Copy(io.Discard, readerOnly{server})
				drained <- n
			}()
			msg := make([]byte, size)
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := client.Write(msg); err != nil {
					b.Fatal(err)
				}
			}
			client.Close()
			<-drained
			server.Close()
		})
	}
}
