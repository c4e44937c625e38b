package driver

import (
	"context"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cosmount/cosmount/pkg/version"
)

// IdentityService implements the CSI Identity service.
type IdentityService struct {
	csi.UnimplementedIdentityServer
	controller bool
}

// NewIdentityService returns the identity service; controller says whether
// this process also serves the Controller service.
func NewIdentityService(controller bool) *IdentityService {
	return &IdentityService{controller: controller}
}

// GetPluginInfo returns the driver name and version.
func (s *IdentityService) GetPluginInfo(ctx context.Context, req *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: Name, VendorVersion: version.Version}, nil
}

// GetPluginCapabilities advertises the controller service when it runs here.
func (s *IdentityService) GetPluginCapabilities(ctx context.Context, req *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	resp := &csi.GetPluginCapabilitiesResponse{}
	if s.controller {
		resp.Capabilities = append(resp.Capabilities, &csi.PluginCapability{
			Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}},
		})
	}
	return resp, nil
}

// Probe answers ready: the plugin holds no connection that could be down,
// and each RPC reports its own dependency failures.
func (s *IdentityService) Probe(ctx context.Context, req *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}
