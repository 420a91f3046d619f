# mlbridge client for R: send arrays to models served by `mlbridge serve`.
#
#   source("clients/r/mlbridge.R")
#   mlbridge_models()                      # c("mnist", "mnist-cnn")
#   logits <- mlbridge_predict("mnist", img)   # img: 28x28 matrix, img[row, col]
#   mlbridge_gradient("box_volume", c(2, 4, 8))   # c(32, 16, 8)
#
# Needs the packages httr and jsonlite. Requests use the KServe V2 JSON
# endpoint POST /v2/models/{name}/infer with the server's Bearer secret;
# gradients go to the model's gradient companion, {name}.vjp.

#' Find a running mlbridge server and read its secret.
#'
#' With no arguments, reads server.json in $MLBRIDGE_HOME (default
#' ~/.mlbridge), which `mlbridge serve` writes at start-up, and the token file
#' it names. Give `url` and `token_file` to reach a server elsewhere.
#' Returns a list(url, token) of class "mlbridge_connection".
mlbridge_connect <- function(url = NULL, token_file = NULL) {
  if (is.null(url) != is.null(token_file)) {
    stop("mlbridge_connect: give both url and token_file, or neither", call. = FALSE)
  }
  if (is.null(url)) {
    info <- .mlbridge_server_info(.mlbridge_home())
    url <- info$url
    token_file <- info$token_file
  }
  structure(list(url = sub("/+$", "", url), token = .mlbridge_read_token(token_file)),
            class = "mlbridge_connection")
}

#' Print a connection without showing its secret.
print.mlbridge_connection <- function(x, ...) {
  cat("<mlbridge connection to ", x$url, ">\n", sep = "")
  invisible(x)
}

#' List the served models' names, or return one model's V2 metadata as a list.
mlbridge_models <- function(name = NULL, conn = mlbridge_connect()) {
  if (!is.null(name)) {
    return(.mlbridge_request(conn, "GET", paste0("/v2/models/", name)))
  }
  reply <- .mlbridge_request(conn, "GET", "/v2/models")
  vapply(reply$models, function(model) model$name, character(1))
}

#' Run a served model on images; return its outputs (logits).
#'
#' Layout: x[n, row, col] is pixel (row, col) of image n, as the model sees
#' [n][row][col]; a single image is a matrix img[row, col] (as image() of
#' t(img[28:1, ]) shows it upright). R stores arrays column-major and the wire
#' is row-major; the conversion is done here, so never transpose images.
#'   28x28 matrix       one image  -> numeric vector of 10 logits
#'   N x 28 x 28 array  N images   -> N x 10 matrix, row n for image n
#' MNIST models expect values in [0, 1]. A request the server rejects raises
#' an error of class "mlbridge_error" carrying the server's message, status
#' and code.
mlbridge_predict <- function(model, x, conn = mlbridge_connect()) {
  .mlbridge_check_arguments(model, x)
  spec <- .mlbridge_input_spec(conn, model)
  wire <- .mlbridge_wire_dims(spec, x)
  tensor <- .mlbridge_tensor(spec$name, spec$datatype, wire$dims, x)
  reply <- .mlbridge_infer(conn, model, list(tensor))
  out <- .mlbridge_output_array(reply$outputs[[1]])
  if (wire$single && length(dim(out)) == 2 && nrow(out) == 1) out[1, ] else out
}

#' Gradient of a served model's outputs at x, shaped like x.
#'
#' Without dy, the gradient of the sum of the model's outputs (what Wolfram's
#' NetPortGradient gives): for a scalar function such as "box_volume" or
#' "lj13" simply its gradient. With dy, shaped like what mlbridge_predict(model,
#' x) returns (10 numbers for one MNIST image, an N x 10 matrix for N images, a
#' number for one example of a scalar function), the vector-Jacobian product
#' t(J(x)) %*% dy. x is one example or a batch, laid out as for
#' mlbridge_predict; the result has x's dimensions. The request goes to the
#' model's gradient companion (parameters$gradient in its metadata, e.g.
#' "box_volume.vjp"); a model without one raises an "mlbridge_error" with code
#' "GradientUnavailable" and the server's reason.
mlbridge_gradient <- function(model, x, dy = NULL, conn = mlbridge_connect()) {
  .mlbridge_check_arguments(model, x, "mlbridge_gradient")
  spec <- .mlbridge_input_spec(conn, model)
  grad <- .mlbridge_gradient_spec(conn, model)
  wire <- .mlbridge_wire_dims(spec, x)
  tensors <- list(.mlbridge_tensor(spec$name, spec$datatype, wire$dims, x))
  if (!is.null(dy)) {
    shape <- c(wire$dims[1], .mlbridge_output_shape(conn, model, wire$dims, x))
    .mlbridge_check_cotangent(dy, shape, wire$single)
    tensors[[2]] <- .mlbridge_tensor(grad$cotangent, grad$cotangent_datatype, shape, dy)
  }
  reply <- .mlbridge_infer(conn, grad$companion, tensors)
  .mlbridge_from_row_major(.mlbridge_output_data(reply, grad$grad), dim(x))
}

#' Jacobian of a served model at one example x.
#'
#' J[k, i, j] is d output[k] / d x[i, j]: dimensions output dimensions + input
#' dimensions, e.g. 10 x 28 x 28 for "mnist" and a 28x28 image; for a scalar
#' function ("box_volume", "lj13") the gradient, shaped like x. One call of the
#' gradient companion: x repeated once per output element, with the unit
#' cotangents. Errors as for mlbridge_gradient.
mlbridge_jacobian <- function(model, x, conn = mlbridge_connect()) {
  .mlbridge_check_arguments(model, x, "mlbridge_jacobian")
  spec <- .mlbridge_input_spec(conn, model)
  grad <- .mlbridge_gradient_spec(conn, model)
  wire <- .mlbridge_wire_dims(spec, x)
  if (wire$dims[1] != 1) {
    stop(sprintf("mlbridge_jacobian: x must be one example of model '%s' (shape [%s]); got [%s]",
                 model, paste(spec$shape[-1], collapse = ", "), paste(wire$dims, collapse = ", ")),
         call. = FALSE)
  }
  out <- .mlbridge_output_shape(conn, model, wire$dims, x)
  count <- prod(out)  # one row of the Jacobian per output element
  batch <- rep(.mlbridge_row_major(x), count)
  tensors <- list(
    .mlbridge_tensor(spec$name, spec$datatype, c(count, wire$dims[-1]), batch),
    .mlbridge_tensor(grad$cotangent, grad$cotangent_datatype, c(count, out), diag(count)))
  reply <- .mlbridge_infer(conn, grad$companion, tensors)
  data <- .mlbridge_output_data(reply, grad$grad)
  # A scalar function's Jacobian is its gradient, shaped like x.
  shape <- if (length(out) == 0) dim(x) else c(out, wire$dims[-1])
  .mlbridge_from_row_major(data, shape)
}

.mlbridge_home <- function() {
  home <- Sys.getenv("MLBRIDGE_HOME")
  if (nzchar(home)) home else file.path(path.expand("~"), ".mlbridge")
}

.mlbridge_server_info <- function(home) {
  path <- file.path(home, "server.json")
  if (!file.exists(path)) {
    stop(sprintf(paste("mlbridge: no server found: %s does not exist;",
                       "start one with `mlbridge serve` or set MLBRIDGE_HOME"), path),
         call. = FALSE)
  }
  info <- jsonlite::fromJSON(path, simplifyVector = FALSE)
  if (is.null(info$url) || is.null(info$token_file)) {
    stop(sprintf("mlbridge: %s lacks \"url\" or \"token_file\"", path), call. = FALSE)
  }
  info
}

.mlbridge_read_token <- function(token_file) {
  if (!file.exists(token_file)) {
    stop(sprintf("mlbridge: token file %s does not exist", token_file), call. = FALSE)
  }
  token <- trimws(paste(readLines(token_file, warn = FALSE), collapse = ""))
  if (!nzchar(token)) stop(sprintf("mlbridge: token file %s is empty", token_file), call. = FALSE)
  token
}

.mlbridge_check_arguments <- function(model, x, caller = "mlbridge_predict") {
  if (!is.character(model) || length(model) != 1 || !nzchar(model)) {
    stop(sprintf("%s: model must be a model name, e.g. \"mnist\"", caller), call. = FALSE)
  }
  if (!(is.numeric(x) || is.logical(x))) {
    stop(sprintf("%s: x must be a numeric vector, matrix or array (one example or a batch); got %s",
                 caller, class(x)[1]), call. = FALSE)
  }
}

# Model metadata is fetched once per server and model: it names the input, its
# rank tells a single image from a batch, and it names the gradient companion.
.mlbridge_metadata_cache <- new.env(parent = emptyenv())

.mlbridge_metadata <- function(conn, model) {
  key <- paste(conn$url, model, sep = "|")
  if (is.null(.mlbridge_metadata_cache[[key]])) {
    .mlbridge_metadata_cache[[key]] <- mlbridge_models(model, conn)
  }
  .mlbridge_metadata_cache[[key]]
}

.mlbridge_input_spec <- function(conn, model) {
  meta <- .mlbridge_metadata(conn, model)
  if (length(meta$inputs) != 1) {
    stop(sprintf("mlbridge: model '%s' has %d inputs; this client sends exactly one",
                 model, length(meta$inputs)), call. = FALSE)
  }
  input <- meta$inputs[[1]]
  list(name = input$name, datatype = input$datatype, shape = unlist(input$shape))
}

# The companion serving the model's vector-Jacobian product and its tensor
# names; a model without one is an error that gives the server's reason.
.mlbridge_gradient_spec <- function(conn, model) {
  meta <- .mlbridge_metadata(conn, model)
  companion <- meta$parameters[["gradient"]]  # not $, which would match gradient_unavailable
  if (is.null(companion)) {
    reason <- meta$parameters[["gradient_unavailable"]]
    if (!is.character(reason)) reason <- "the server names no gradient"
    .mlbridge_raise(sprintf("mlbridge: model '%s' serves no gradient: %s", model, reason),
                    NA_integer_, "GradientUnavailable")
  }
  output <- meta$outputs[[1]]
  list(companion = companion, cotangent = paste0(output$name, "_cotangent"),
       cotangent_datatype = output$datatype,
       grad = paste0(.mlbridge_input_spec(conn, model)$name, "_grad"))
}

# One example's output shape: from the metadata, or, when that leaves a
# dimension open, from the model's own answer at x.
.mlbridge_output_shape <- function(conn, model, dims, x) {
  shape <- as.integer(unlist(.mlbridge_metadata(conn, model)$outputs[[1]]$shape))[-1]
  if (any(shape < 0)) {
    spec <- .mlbridge_input_spec(conn, model)
    reply <- .mlbridge_infer(conn, model, list(.mlbridge_tensor(spec$name, spec$datatype, dims, x)))
    shape <- as.integer(unlist(reply$outputs[[1]]$shape))[-1]
  }
  shape
}

# The shape x travels with, and whether it is one example: an array with one
# dimension fewer than the model's input (a vector for a model whose examples
# are vectors) is sent as a batch of one.
.mlbridge_wire_dims <- function(spec, x) {
  dims <- if (is.null(dim(x))) length(x) else dim(x)
  single <- length(spec$shape) == length(dims) + 1
  list(dims = if (single) c(1L, dims) else dims, single = single)
}

.mlbridge_check_cotangent <- function(dy, shape, single) {
  # A vector may hold the outputs in any layout; an array must have their
  # dimensions (with or without a single example's batch axis), so that a
  # transposed matrix is not misread.
  fits <- length(dy) == prod(shape) &&
    (is.null(dim(dy)) || identical(as.integer(dim(dy)), as.integer(shape)) ||
       (single && identical(as.integer(dim(dy)), as.integer(shape[-1]))))
  if (!fits) {
    got <- if (is.null(dim(dy))) sprintf("%d numbers", length(dy))
           else paste0("[", paste(dim(dy), collapse = ", "), "]")
    stop(sprintf(paste("mlbridge_gradient: dy must have the shape of the model's outputs",
                       "for this x, [%s]; got %s"),
                 paste(shape, collapse = ", "), got), call. = FALSE)
  }
}

# R stores arrays column-major; reversing the dimensions gives the row-major
# (C) order of the V2 "data" field.
.mlbridge_row_major <- function(x) {
  if (length(dim(x)) > 1) as.numeric(aperm(x, rev(seq_along(dim(x))))) else as.numeric(x)
}

.mlbridge_from_row_major <- function(data, shape) {
  if (length(shape) <= 1) return(data)
  aperm(array(data, rev(shape)), rev(seq_along(shape)))
}

# One V2 input tensor. The numbers are written here, not by jsonlite (which
# stops at 15 digits): 17 significant digits for FP64, so that they arrive
# exactly, 9 (exact for float32) otherwise.
.mlbridge_tensor <- function(name, datatype, dims, x) {
  if (anyNA(x)) stop("mlbridge: NA and NaN cannot be sent to a model", call. = FALSE)
  format <- if (identical(datatype, "FP64")) "%.17g" else "%.9g"
  numbers <- sprintf(format, .mlbridge_row_major(x))
  list(name = name, datatype = datatype, shape = I(as.integer(dims)),
       data = structure(paste0("[", paste(numbers, collapse = ","), "]"), class = "json"))
}

.mlbridge_infer <- function(conn, model, tensors) {
  body <- jsonlite::toJSON(list(inputs = tensors), auto_unbox = TRUE, json_verbatim = TRUE)
  .mlbridge_request(conn, "POST", paste0("/v2/models/", model, "/infer"), body)
}

.mlbridge_output_data <- function(reply, name) {
  for (output in reply$outputs) {
    if (identical(output$name, name)) return(.mlbridge_checked_data(output))
  }
  stop(sprintf("mlbridge: the reply has no output \"%s\"", name), call. = FALSE)
}

.mlbridge_checked_data <- function(output) {
  shape <- as.integer(unlist(output$shape))
  data <- as.numeric(unlist(output$data))
  if (length(data) != prod(shape)) {
    stop(sprintf("mlbridge: output \"%s\" has %d values, but its shape [%s] needs %d",
                 output$name, length(data), paste(shape, collapse = ", "), prod(shape)),
         call. = FALSE)
  }
  data
}

.mlbridge_output_array <- function(output) {
  .mlbridge_from_row_major(.mlbridge_checked_data(output), as.integer(unlist(output$shape)))
}

.mlbridge_request <- function(conn, method, path, body = NULL) {
  url <- paste0(conn$url, path)
  headers <- httr::add_headers(Authorization = paste("Bearer", conn$token),
                               Accept = "application/json")
  # Loopback never goes through a proxy the user may have configured.
  options <- httr::config(noproxy = "127.0.0.1,localhost,::1", connecttimeout = 10)
  response <- tryCatch(
    if (is.null(body)) httr::GET(url, headers, options)
    else httr::POST(url, headers, options, httr::content_type_json(), body = body),
    error = function(e) {
      stop(sprintf("mlbridge: %s %s failed: %s", method, url, conditionMessage(e)),
           call. = FALSE)
    })
  text <- httr::content(response, as = "text", encoding = "UTF-8")
  status <- httr::status_code(response)
  if (status < 200 || status >= 300) .mlbridge_server_error(status, text, method, url)
  jsonlite::fromJSON(text, simplifyVector = FALSE)
}

.mlbridge_server_error <- function(status, text, method, url) {
  # The server answers {"error": "...", "code": "..."}; anything else (a
  # proxy's HTML page, say) is shown as it came, shortened.
  parsed <- tryCatch(jsonlite::fromJSON(text, simplifyVector = FALSE), error = function(e) NULL)
  message <- if (is.list(parsed) && !is.null(parsed$error)) parsed$error else trimws(text)
  if (is.na(message) || !nzchar(message)) message <- "the server sent an empty error reply"
  if (nchar(message) > 500) message <- paste0(substr(message, 1, 500), "...")
  code <- if (is.list(parsed) && is.character(parsed$code)) parsed$code else paste0("HTTP", status)
  .mlbridge_raise(sprintf("mlbridge: %s (HTTP %d from %s %s)", message, status, method, url),
                  status, code)
}

# An error of class "mlbridge_error" with the HTTP status (NA when no request
# was sent) and the server's code.
.mlbridge_raise <- function(message, status, code) {
  stop(structure(class = c("mlbridge_error", "error", "condition"),
                 list(message = message, call = NULL, status = status, code = code)))
}
