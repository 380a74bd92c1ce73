// peerfarm example: a twisted box that spins once and shifts colour over the animation.
// clock runs 0..1 over the job's frames: peerfarm passes +KFI<first> +KFF<last> +KI0 +KF1.
// Try it alone: povray +Ispin.pov +W320 +H240 +KFI1 +KFF24 +KI0 +KF1 +SF6 +EF6 -D
#version 3.7;
#include "spin_colors.inc"

global_settings { assumed_gamma 1.0 }

camera { location <0, 2.2, -5> look_at <0, 0.6, 0> angle 50 }
light_source { <-4, 6, -5> color rgb 1 }
light_source { <5, 3, -2> color rgb 0.4 shadowless }
background { rgb <0.05, 0.05, 0.08> }

plane { y, 0 pigment { checker color FloorA color FloorB scale 0.7 } }

union {
  box { <-0.8, 0, -0.8>, <0.8, 0.3, 0.8> }
  box { <-0.5, 0.3, -0.5>, <0.5, 1.3, 0.5> rotate y * 45 }
  sphere { <0, 1.7, 0>, 0.4 }
  pigment { color SpinColour(clock) }
  finish { phong 0.6 }
  rotate y * 360 * clock
  translate <0, 0, 0>
}
