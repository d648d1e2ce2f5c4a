#pragma once
// What a data-parallel wrapper learns from the model's passes, so that it can overlap its
// communication with them (Megatron's forward pre-hooks and grad-ready hooks). Parameters are
// named by their registration ids in the ParamAndGradBuffer: [first, end) is a contiguous range
// (a layer, the embeddings, the final norm).
namespace mt {

class ParamHooks {
 public:
  virtual ~ParamHooks() = default;
  // The forward pass is about to read these parameters (an overlapped all-gather of updated
  // parameters must have landed).
  virtual void before_forward(int first, int end) = 0;
  // The backward pass has finished accumulating this microbatch's grads of these parameters.
  virtual void after_backward(int first, int end) = 0;
};

}  // namespace mt
