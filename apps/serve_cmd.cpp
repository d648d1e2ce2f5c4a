#include "serve_cmd.h"

#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <pthread.h>

#include <chrono>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>

#include "comm/mpi_communicator.h"
#include "core/error.h"
#include "inference/completions_api.h"
#include "inference/megatron_api.h"
#include "inference/model_loader.h"
#include "inference/request_fields.h"
#include "train/arguments.h"

namespace mt {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
constexpr size_t kMaxBody = size_t(64) << 20;  // bytes of a request body

#define MT_ARG_ERROR(...) throw ArgumentError(fmt::format(__VA_ARGS__))

void check_options(const ServeCommand::Options& o) {
  check_model_source(o.model);
  if (o.port < 0 || o.port > 65535) MT_ARG_ERROR("--port {}: expected 0 to 65535 (0: any free port)", o.port);
  if (dist::world_size() > 1)
    MT_ARG_ERROR("megatron serve runs in one process ({} were started): start it without mpirun", dist::world_size());
}

// The error bodies: Megatron's clients read "message"; OpenAI's read {"error": {...}}.
enum class ErrorStyle { kMegatron, kOpenAI };

// Bytes of the request quoted in a message (a JSON parser's "last read") need not be UTF-8:
// they are replaced, not thrown over.
std::string error_body(ErrorStyle style, const std::string& message, const std::string& field, bool server_error) {
  const json body = style == ErrorStyle::kMegatron
                        ? json{{"message", message}}
                        : json{{"error",
                                {{"message", message},
                                 {"type", server_error ? "server_error" : "invalid_request_error"},
                                 {"param", field.empty() ? json(nullptr) : json(field)},
                                 {"code", nullptr}}}};
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

// The model, its name and what the handlers share. A handler holds `lock` while it runs the
// model: one request at a time.
struct Served {
  LoadedModel model;
  std::string name;
  std::mutex lock;
  std::mt19937_64 seeds{std::random_device{}()};  // sampling seeds of requests that give none
  uint64_t completions = 0;                       // numbers the completions' ids
};

using Api = std::function<json(const json&)>;

// Parses the body, runs `api` under the model lock, and answers 200 with its JSON, 400 with
// the message of a bad request, or 500 with what went wrong inside.
void serve_request(const httplib::Request& req, httplib::Response& res, Served& s, ErrorStyle style,
                   const Api& api) {
  const auto t0 = Clock::now();
  json body;
  bool no_log = false;
  try {
    try {
      body = json::parse(req.body);
    } catch (const json::parse_error& e) {
      throw BadRequest("", fmt::format("the request body is not valid JSON ({})", e.what()));
    }
    no_log = body.is_object() && body.value("no_log", json(false)).is_boolean() && body.value("no_log", false);
    json out;
    {
      std::lock_guard<std::mutex> hold(s.lock);
      out = api(body);
    }
    res.status = 200;
    res.set_content(out.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
  } catch (const BadRequest& e) {
    res.status = 400;
    res.set_content(error_body(style, e.what(), e.field, false), "application/json");
  } catch (const UserError& e) {  // input the model's own checks refused
    res.status = 400;
    res.set_content(error_body(style, e.what(), "", false), "application/json");
  } catch (const std::exception& e) {
    res.status = 500;
    res.set_content(error_body(style, fmt::format("internal error: {}", e.what()), "", true), "application/json");
  }
  if (!no_log)
    fmt::print(stderr, "> serve: {} {} from {} -> {} ({:.1f} ms)\n", req.method, req.path, req.remote_addr, res.status,
               std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
}

void add_routes(httplib::Server& server, Served& s) {
  server.Put("/api", [&](const httplib::Request& req, httplib::Response& res) {
    serve_request(req, res, s, ErrorStyle::kMegatron,
                  [&](const json& body) { return megatron_generate_api(body, s.model, s.seeds()); });
  });
  const auto completions = [&](const httplib::Request& req, httplib::Response& res) {
    serve_request(req, res, s, ErrorStyle::kOpenAI, [&](const json& body) {
      CompletionsContext c{s.name, fmt::format("cmpl-{:x}-{}", uint64_t(std::time(nullptr)), ++s.completions),
                           int64_t(std::time(nullptr)), s.seeds()};
      return completions_api(body, s.model, c);
    });
  };
  server.Post("/v1/completions", completions);
  server.Post("/completions", completions);  // Megatron's own path for it
  server.Get("/v1/models", [&](const httplib::Request&, httplib::Response& res) {
    const json m = {{"id", s.name}, {"object", "model"}, {"created", int64_t(std::time(nullptr))},
                    {"owned_by", "megatron.cpp"}};
    res.set_content(json{{"object", "list"}, {"data", json::array({m})}}.dump(), "application/json");
  });
  // A known path asked with the wrong method: 405, naming the right one.
  const auto wrong_method = [](const char* right) {
    return [right](const httplib::Request& req, httplib::Response& res) {
      res.status = 405;
      res.set_header("Allow", right);
      res.set_content(json{{"message", fmt::format("{} {}: use {}", req.method, req.path, right)}}.dump(),
                      "application/json");
    };
  };
  server.Get("/api", wrong_method("PUT")).Post("/api", wrong_method("PUT"));
  for (const char* path : {"/v1/completions", "/completions"})
    server.Get(path, wrong_method("POST")).Put(path, wrong_method("POST"));
  // Anything else (no route matched): 404 with a JSON message. Answers with a body of their own pass.
  server.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    const std::string why = res.status == 404 ? "not found (this server answers PUT /api, POST /v1/completions "
                                                "and GET /v1/models)"
                            : res.status == 413 ? fmt::format("the request body is over {} bytes", kMaxBody)
                                                : fmt::format("HTTP error {}", res.status);
    res.set_content(json{{"message", fmt::format("{} {}: {}", req.method, req.path, why)}}.dump(), "application/json");
    return httplib::Server::HandlerResponse::Handled;
  }));
}

// SIGTERM and SIGINT, taken by a thread of their own. They are blocked before any other thread
// starts (OpenMP's, MPI's, the server's), so every thread inherits the mask and none dies of
// them. While the model loads they end the process at once (exit code 128 + the signal); once
// serve() runs they stop the server: listening ends, the request being served finishes, and
// serve() returns.
class StopSignals {
 public:
  StopSignals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    watcher_ = std::thread([this] { watch(); });
  }
  ~StopSignals() {
    {
      std::lock_guard<std::mutex> hold(m_);
      done_ = true;
    }
    pthread_kill(watcher_.native_handle(), SIGTERM);  // wakes it if no signal came
    watcher_.join();
  }
  // Serves on the bound server until a signal; false when it stopped on an error.
  bool serve(httplib::Server& server) {
    {
      std::lock_guard<std::mutex> hold(m_);
      server_ = &server;
    }
    const bool ok = server.listen_after_bind();
    std::lock_guard<std::mutex> hold(m_);
    done_ = true;
    return ok;
  }

 private:
  void watch() {
    int sig = 0;
    sigwait(&set_, &sig);
    std::unique_lock<std::mutex> hold(m_);
    if (!done_ && !server_) std::_Exit(128 + sig);
    // stop() before listen_after_bind has started is lost: repeat it until serve() is done.
    while (!done_) {
      server_->stop();
      hold.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      hold.lock();
    }
  }
  sigset_t set_;
  std::mutex m_;
  httplib::Server* server_ = nullptr;
  bool done_ = false;
  std::thread watcher_;
};

}  // namespace

ServeCommand add_serve_command(CLI::App& app) {
  ServeCommand c;
  c.opts = std::make_shared<ServeCommand::Options>();
  ServeCommand::Options& o = *c.opts;
  c.app = app.add_subcommand("serve", "Serve text generation over HTTP: Megatron's PUT /api and OpenAI's POST "
                                      "/v1/completions");
  const char* g = "Model";
  add_model_source_flags(*c.app, o.model);
  c.app->add_option("--served-model-name", o.served_model_name,
                    "The model's name in OpenAI answers (default: the model directory's name)")->group(g);
  g = "Server";
  c.app->add_option("--host", o.host, "Address to listen on")->capture_default_str()->group(g);
  c.app->add_option("--port", o.port, "Port to listen on (0: any free port)")->capture_default_str()->group(g);
  return c;
}

void run_serve(const ServeCommand::Options& o) {
  StopSignals signals;  // first: before any thread starts
  dist::init();
  check_options(o);
  const Device device = model_source_device(o.model);
  const DType dtype = o.model.dtype();
  Served s;
  const auto t0 = Clock::now();
  s.model = load_model_source(o.model, device);
  if (!s.model.tokenizer)
    MT_USER_ERROR("{}: no tokenizer (no tokenizer.json): megatron serve takes text, give --tokenizer-model FILE",
                  o.model.flag());
  std::filesystem::path dir = std::filesystem::weakly_canonical(std::filesystem::absolute(
      o.model.dir()));
  if (dir.filename().empty()) dir = dir.parent_path();  // a trailing slash
  s.name = !o.served_model_name.empty() ? o.served_model_name : dir.filename().string();
  const TransformerConfig& cfg = s.model.model->config();
  fmt::print(stderr, "> serve: {}: {} layers, hidden {}, {}, vocab {}, {} on {} (loaded in {:.2f} s)\n", s.name,
             cfg.num_layers, cfg.hidden_size, describe_architecture(cfg), cfg.vocab_size, dtype_name(dtype),
             device.str(), std::chrono::duration<double>(Clock::now() - t0).count());

  httplib::Server server;
  server.set_payload_max_length(kMaxBody);
  add_routes(server, s);
  const int port = o.port == 0 ? server.bind_to_any_port(o.host) : (server.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port < 0) MT_USER_ERROR("--host {} --port {}: cannot listen there (address in use or not this machine's)", o.host, o.port);
  fmt::print(stderr, "> serve: listening on http://{}:{} (PUT /api, POST /v1/completions); one request at a time\n",
             o.host, port);
  std::fflush(stderr);
  const bool ok = signals.serve(server);
  if (!ok) MT_USER_ERROR("--host {} --port {}: the server stopped with an error", o.host, port);
  fmt::print(stderr, "> serve: stopped\n");
}

}  // namespace mt
