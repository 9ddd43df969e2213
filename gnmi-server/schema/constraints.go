package schema

// The schema that ygot embeds in gen/model is goyang's entry tree, which
// drops two YANG statements the server must enforce: `mandatory` set through
// `refine`, and `unique`. They are listed here; TestConstraintsMatchYANG
// parses yang/ with goyang and fails if these lists and the modules differ.

// RefinedMandatory lists the config leaves made mandatory by a refine.
var RefinedMandatory = map[string]bool{
	"/paths/path/config/source-site":                     true,
	"/paths/path/config/source-endpoint":                 true,
	"/paths/path/config/destination-site":                true,
	"/paths/path/config/destination-endpoint":            true,
	"/policies/policy/config/priority":                   true,
	"/sites/site/endpoints/endpoint/config/address":      true,
	"/system/cluster/members/member/config/address":      true,
	"/system/cluster/members/member/config/raft-address": true,
	"/system/cluster/members/member/config/suffrage":     true,
	"/system/aaa/users/user/config/role":                 true,
}

// Unique maps a list's schema path to its YANG unique leaf, relative to the
// list entry.
var Unique = map[string]string{"/policies/policy": "config/priority"}
