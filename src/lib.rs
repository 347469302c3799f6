//! torchvision's residual networks, and the paper's CIFAR-10 ones, compiled
//! by [`resnet!`](resnet_runtime::resnet): each a type whose layer table,
//! parameter count and multiply-adds are known at compile time.
//!
//! The specs below are what a user writes; this crate also holds the
//! workspace's examples and end-to-end tests.

use resnet_runtime::resnet;

resnet! {
    /// torchvision `resnet18`.
    pub ResNet18<stages: [2, 2, 2, 2]>
    /// torchvision `resnet34`.
    pub ResNet34<stages: [3, 4, 6, 3]>
    /// torchvision `resnet50` (v1.5: the stride on the 3x3 convolution).
    pub ResNet50<stages: [3, 4, 6, 3], bottleneck: true>
    /// torchvision `resnet101`.
    pub ResNet101<stages: [3, 4, 23, 3], bottleneck: true>
    /// torchvision `resnet152`.
    pub ResNet152<stages: [3, 8, 36, 3], bottleneck: true>
    /// torchvision `resnext50_32x4d`.
    pub ResNeXt50x32x4d<stages: [3, 4, 6, 3], bottleneck: true, groups: 32, width_per_group: 4>
    /// torchvision `wide_resnet50_2`.
    pub WideResNet50x2<stages: [3, 4, 6, 3], bottleneck: true, width_per_group: 128>
}

resnet! {
    /// The paper's CIFAR-10 ResNet-20 (section 4.2: 6n + 2 layers, n = 3;
    /// option A shortcuts).
    pub CifarResNet20<stages: [3, 3, 3], stem: cifar, widths: [16, 32, 64], input: [3, 32, 32], classes: 10, shortcut: zero_pad>
    /// The paper's CIFAR-10 ResNet-56 (n = 9).
    pub CifarResNet56<stages: [9, 9, 9], stem: cifar, widths: [16, 32, 64], input: [3, 32, 32], classes: 10, shortcut: zero_pad>
    /// The paper's CIFAR-10 ResNet-110 (n = 18).
    pub CifarResNet110<stages: [18, 18, 18], stem: cifar, widths: [16, 32, 64], input: [3, 32, 32], classes: 10, shortcut: zero_pad>
}
