package client_test

import (
	"context"
	"fmt"
	"time"

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
// made by a Client (see NewClient); the blinding is the same.
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
