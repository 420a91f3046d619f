(* ::Package:: *)
(* MLBridge`Private`: what may be trusted with the secret (docs/security.md, sections 1 and 2).
   Read by MLBridge.wl inside its private context; not a package of its own.

   Files: anyone who could write the home folder, server.json or the token file could point
   the package at a server of their own, or read the secret. The Wolfram Language has no lstat:
   Information[File[...]] lists "UnixPermissionsCode" and "OwnerName" but says nothing of
   symbolic links (FileType follows them) and is not in 12.0, so the owner, the mode and the
   file type come from the system's stat(1), which does not follow links. Windows has no such
   modes (its profile folders are private by default): the checks are Unix-only there.
   URLs: http only on this machine; anything else must be https. *)

(* ---- files ---------------------------------------------------------------------------- *)

(* GNU stat on Linux, BSD stat on macOS: "uid:octal mode:file type", the link itself. *)
statArguments["MacOSX", path_String] := {"stat", "-f", "%u:%Mp%Lp:%HT", "--", path};
statArguments[_, path_String] := {"stat", "-c", "%u:%a:%F", "--", path};

(* <|"UID", "Mode", "Link"|>, or the reason the path cannot be examined. *)
fileStatus[path_String] := Module[
  {result = helperProcess[statArguments[$OperatingSystem, path]], fields},
  If[!AssociationQ[result] || result["ExitCode"] =!= 0,
    Return["cannot examine " <> path <> " (" <> processOutput[result] <> ")"]];
  fields = StringSplit[StringTrim[result["StandardOutput"]], ":"];
  If[Length[fields] < 3 || !StringMatchQ[fields[[1]], DigitCharacter ..] ||
      !StringMatchQ[fields[[2]], DigitCharacter ..],
    Return["cannot examine " <> path <> " (stat said " <> result["StandardOutput"] <> ")"]];
  <|"UID" -> FromDigits[fields[[1]]], "Mode" -> FromDigits[fields[[2]], 8],
    "Link" -> StringMatchQ[ToLowerCase[fields[[3]]], "symbolic link*"]|>];

$userID = None;
currentUserID[] := If[IntegerQ[$userID], $userID, With[{result = helperProcess[{"id", "-u"}]},
  If[AssociationQ[result] && StringMatchQ[StringTrim[result["StandardOutput"]], DigitCharacter ..],
    $userID = FromDigits[StringTrim[result["StandardOutput"]]], None]]];

(* Octal digits of the mode: group, others; bit 2 of a digit is "write". *)
writableByOthersQ[mode_Integer] := AnyTrue[{Quotient[mode, 8], mode},
  Mod[Quotient[Mod[#, 8], 2], 2] === 1 &];
openToOthersQ[mode_Integer] := Mod[mode, 64] =!= 0;

(* None when path is the user's own, no link, and closed to others as kind requires ("Folder":
   no one else may write; "File": no one else may do anything); else the refusal. *)
trustProblem[path_String, kind_String] := Module[{status, user},
  If[$OperatingSystem === "Windows", Return[None]];
  status = fileStatus[path];
  If[StringQ[status], Return[status]];
  user = currentUserID[];
  Which[
    status["Link"], path <> " is a symbolic link; refusing to trust it with secrets",
    !IntegerQ[user], "cannot tell who this user is (id -u failed); refusing to trust " <> path,
    status["UID"] =!= user, path <> " belongs to another user; refusing to trust it with secrets",
    kind === "Folder" && writableByOthersQ[status["Mode"]],
      path <> " is writable by others (mode " <> IntegerString[status["Mode"], 8] <>
        "); run: chmod go-w " <> path,
    kind === "File" && openToOthersQ[status["Mode"]],
      path <> " is open to others (mode " <> IntegerString[status["Mode"], 8] <>
        "); run: chmod 600 " <> path,
    True, None]];

untrusted[message_String] := Failure["MLBridge", <|"MessageTemplate" -> message,
  "Status" -> Missing["NotSent"], "Code" -> "Untrusted"|>];

(* The first refusal among {path, kind} pairs, as a Failure; None when all may be trusted. *)
checkTrusted[checks_List] := Module[{problems = trustProblem @@@ checks},
  If[AllTrue[problems, # === None &], None, untrusted[First[Select[problems, StringQ]]]]];

(* ---- URLs ------------------------------------------------------------------------------ *)

controlCharacterQ[text_String] := AnyTrue[ToCharacterCode[text], # < 32 || # === 127 &];

(* <|"Scheme", "Host", "Path"|> of scheme://[user@]host[:port][/path][?query]; host without
   the brackets of an IPv6 literal; $Failed without "://". *)
urlParts[url_String] := Module[{split = StringPosition[url, "://"], rest, ends, authority, at,
    hostPort, close, colon},
  If[split === {}, Return[$Failed]];
  rest = StringDrop[url, split[[1, 2]]];
  ends = Position[Characters[rest], "/" | "?" | "#"];
  authority = If[ends === {}, rest, StringTake[rest, ends[[1, 1]] - 1]];
  at = StringPosition[authority, "@"];
  hostPort = If[at === {}, authority, StringDrop[authority, at[[-1, 1]]]];
  close = StringPosition[hostPort, "]"];
  colon = StringPosition[hostPort, ":"];
  <|"Scheme" -> StringTake[url, split[[1, 1]] - 1],
    "Host" -> Which[
      StringLength[hostPort] > 0 && StringTake[hostPort, 1] === "[" && close =!= {},
        StringTake[hostPort, {2, close[[1, 1]] - 1}],
      colon === {}, hostPort,
      True, StringTake[hostPort, colon[[1, 1]] - 1]],
    "Path" -> If[ends === {}, "", StringDrop[rest, ends[[1, 1]] - 1]]|>];

(* localhost, 127.0.0.0/8 or ::1 (in any of its spellings). *)
octet = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
loopbackQ[host_String] := ToLowerCase[host] === "localhost" ||
  StringMatchQ[host, RegularExpression["127(\\." <> octet <> "){3}"]] ||
  StringMatchQ[host, RegularExpression["(0{0,4}:){1,7}:?0{0,3}1"]];

(* None when the secret may go to url, else why not. *)
urlProblem[url_String] := Module[{parts},
  If[controlCharacterQ[url], Return["the server URL holds a control character (code " <>
    ToString[First[Select[ToCharacterCode[url], # < 32 || # === 127 &]]] <> "); refusing it"]];
  parts = urlParts[url];
  Which[
    !AssociationQ[parts] || !MemberQ[{"http", "https"}, parts["Scheme"]],
      "expected a server URL such as http://127.0.0.1:8123 (http or https); got " <>
        ToString[url, InputForm],
    parts["Host"] === "", url <> " names no host",
    parts["Scheme"] === "http" && !loopbackQ[parts["Host"]],
      url <> " is not on this machine; use https for a remote server (http would send the " <>
        "secret across the network in clear)",
    True, None]];
