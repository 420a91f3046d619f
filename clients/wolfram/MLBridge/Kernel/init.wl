(* Needs["MLBridge`"] on an installed paclet lands here; the package itself is MLBridge.wl. *)
Get[FileNameJoin[{DirectoryName[$InputFileName], "MLBridge.wl"}]];
