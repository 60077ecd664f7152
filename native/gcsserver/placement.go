package gcsserver

import (
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

type placementGroup struct {
	data *raypb.PlacementGroupTableData
}

type pgService struct {
	raypb.UnimplementedPlacementGroupInfoGcsServiceServer
	s *Server
}

func (s *Server) pendingPGLoadLocked() *raypb.PlacementGroupLoad { return &raypb.PlacementGroupLoad{} }
