// libtrust-verify checks a signed schema1 manifest ("pretty JWS") with
// Debian's packaged github.com/docker/libtrust, i.e. an implementation that
// shares no code with registryfs.
//
// Usage: libtrust-verify [-payload-out FILE] [FILE|-]
//
// It reads the document from FILE (or standard input), then
//   - libtrust.ParsePrettySignature(doc, "signatures")
//   - Verify(): every signature must verify against the key in its header
//   - Payload(): the canonical (signature-stripped) manifest
//
// and prints, on success:
//
//	line 1: sha256:<hex> of the payload (what a registry sends as
//	        Docker-Content-Digest and what clients compare it with)
//	then:   one line per signature with the verifying key's ID (kid)
//
// On any failure it prints "libtrust-verify: <reason>" on stderr and exits 1.
//
// Built in GOPATH mode against /usr/share/gocode (package
// golang-github-docker-libtrust-dev) by scripts/build-libtrust-verify.sh, so
// it needs no network and no go.mod.
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"os"

	"github.com/docker/libtrust"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "libtrust-verify: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	payloadOut := flag.String("payload-out", "", "also write the canonical payload to this file")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: libtrust-verify [-payload-out FILE] [FILE|-]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 1 {
		flag.Usage()
		os.Exit(2)
	}

	var doc []byte
	var err error
	if flag.NArg() == 0 || flag.Arg(0) == "-" {
		doc, err = io.ReadAll(os.Stdin)
	} else {
		doc, err = ioutil.ReadFile(flag.Arg(0))
	}
	if err != nil {
		fail("reading input: %v", err)
	}

	js, err := libtrust.ParsePrettySignature(doc, "signatures")
	if err != nil {
		fail("parse: %v", err)
	}
	keys, err := js.Verify()
	if err != nil {
		fail("verify: %v", err)
	}
	// Verify() happily returns no keys and no error for an empty
	// "signatures" array; an unsigned document is a failure for us.
	if len(keys) == 0 {
		fail("verify: no signatures")
	}
	payload, err := js.Payload()
	if err != nil {
		fail("payload: %v", err)
	}
	if *payloadOut != "" {
		if err := ioutil.WriteFile(*payloadOut, payload, 0o644); err != nil {
			fail("writing payload: %v", err)
		}
	}
	fmt.Printf("sha256:%x\n", sha256.Sum256(payload))
	for _, k := range keys {
		fmt.Println(k.KeyID())
	}
}
