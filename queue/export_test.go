package queue

import "github.com/nats-io/nats-server/v2/server"

// EmbeddedJetStreamConfig exposes the embedded server's JetStream settings
// to the tests.
func (c *Conn) EmbeddedJetStreamConfig() *server.JetStreamConfig { return c.srv.JetStreamConfig() }
