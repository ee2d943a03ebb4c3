package failure

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Interceptor tells the detector about every answer from node id on a
// connection: a success or an error the node's own code returned proves the
// path works; a transport failure, a timeout, or an error made on this side
// (fault hooks) does not. Health checks are left to the probe, which also
// reads their status (a node shutting down answers NOT_SERVING).
func (d *Detector) Interceptor(id string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if strings.HasPrefix(method, "/grpc.health.v1.Health/") {
			return err
		}
		if err == nil {
			d.Heard(id)
			return nil
		}
		if st, ok := status.FromError(err); ok {
			switch st.Code() {
			case codes.NotFound, codes.AlreadyExists, codes.InvalidArgument, codes.FailedPrecondition,
				codes.Aborted, codes.OutOfRange, codes.ResourceExhausted, codes.Unimplemented, codes.PermissionDenied:
				d.Heard(id)
			}
		}
		return err
	}
}
