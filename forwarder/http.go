package forwarder

import "context"

type actorKey struct{}

// WithActor returns a context naming who asks for a redelivery, replay,
// endpoint change or secret rotation ("apikey:<id>", "operator:<id>",
// ...), for the audit entry. Without it the actor is "admin".
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

func actorFrom(ctx context.Context) string {
	if a, ok := ctx.Value(actorKey{}).(string); ok && a != "" {
		return a
	}
	return "admin"
}
