package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ehealth-pseudo/pseudonymizer/client"
	"github.com/ehealth-pseudo/pseudonymizer/identifier"
	"github.com/ehealth-pseudo/pseudonymizer/keys"
	"github.com/ehealth-pseudo/pseudonymizer/owner"
	"github.com/ehealth-pseudo/pseudonymizer/pseudonymizer"
)

// The whole protocol in one process: prescriber software (client) blinds a
// NISS, the service evaluates it without seeing it, the prescription
// service (owner) stores the pseudonym; later the owner sends it back and
// the client identifies the patient. Over the network the service call is
// made by a Client (see New); the blinding is the same.
func Example() {
	ctx := context.Background()
	// The service's domain. In production it lives in Vault.
	kd, _ := keys.GenerateDomain(keys.DomainSpec{Name: "prescriptions_v1", Audience: "urn:be:ehealth:prescriptions"}, nil)
	service, _ := pseudonymizer.NewDomain(kd)
	params := &pseudonymizer.Params{Now: time.Now(), Caller: "dr-alice"}

	// Client: normalize, embed and blind the NISS.
	niss, err := identifier.NISS("85.07.30-033.28")
	if err != nil {
		fmt.Println(err)
		return
	}
	blinded, u, _ := client.Blind(niss)

	// Service: sees only the blinded point.
	ev, _ := service.Pseudonymize(blinded, params)

	// Client: unblind into a transit pseudonym, forward it to the owner.
	tp, _ := u.Unblind(ev.Point[:], ev.TransitInfo)

	// Owner: open it into the pseudonym at rest and store it.
	o, _ := owner.New(ctx, kd.Name, owner.StaticKeys{D: kd})
	defer o.Close()
	stored, _ := o.AtRest(ctx, tp)

	// Later: the owner answers with a transit form bound to the doctor.
	back, _ := o.InTransit(stored, owner.Subject("dr-alice"))

	// Client: blind it, have the service identify it, unblind the NISS.
	b2, u2, _ := client.BlindTransit(back)
	y, _ := service.Identify(b2, back.Info, params)
	id, _ := u2.Identify(y[:])
	fmt.Println(identifier.FormatNISS(id))
	// Output: 85.07.30-033.28
}

// Prescriber software with a Client over an mTLS connection: pseudonymize a
// NISS for the prescription service, and later identify what it sends back.
// Refusals of single items are told apart with errors.Is.
func ExampleNew() {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS13} // with the client certificate and the service's CA
	conn, err := grpc.NewClient("pseudonymizer.example:50051", grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	c := client.New(conn, client.WithMaxBatch(500))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	niss, err := identifier.NISS("85.07.30-033.28")
	if err != nil {
		log.Fatal(err)
	}
	tp, err := c.Pseudonymize(ctx, "prescriptions_v1", niss)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tp) // the text form, for the owner

	fromOwner := tp // in reality: pseudonym.ParseTransit of what the owner sent
	id, err := c.Identify(ctx, "prescriptions_v1", fromOwner)
	switch {
	case errors.Is(err, client.ErrExpired):
		// ask the owner for a fresh transit pseudonym
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println(identifier.FormatNISS(id))
	}
}
